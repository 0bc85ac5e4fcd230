"""What waiting for a replica costs a batch's state writes on the Redis Cluster.

    python -m bench.replica_wait [--batches 400] [--users 200] [--state-bytes 1800]

The cluster profile's Redis nodes are started if they are not running (and stopped
again). Each batch writes `--users` user states of `--state-bytes` (a scorer batch's
compare-and-set writes, as plain SETs) through `scorer.slot_routing.SlotRouter`, one
request per master, alternating between no wait and `WAIT 1` appended to each master's
request (`SlotRouter.run(..., replicas=1)`): the batch returns only once every master's
replica holds its writes. Per variant: the batch's time, median and p99, in ms.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from launcher.layout import layout_for
from launcher.runner import Launcher
from scorer.slot_routing import SlotRouter, command

app = typer.Typer(add_completion=False, help=__doc__)
REDIS_NODES = [f"redis-{i}" for i in range(1, 7)]
console = Console()


def measure(
    router: SlotRouter, batches: int, users: int, state_bytes: int
) -> dict[int, list[float]]:
    """Batch times in seconds by replicas waited for (0 and 1), alternating batches; the
    keys written are deleted at the end."""
    run = uuid.uuid4().hex[:8]
    value = bytes(state_bytes)
    times: dict[int, list[float]] = {0: [], 1: []}
    for b in range(batches):
        keys = [f"bench-wait:{run}:{{user-{b % 50}-{u}}}".encode() for u in range(users)]
        commands = [command(b"SET", k, value, b"EX", b"600") for k in keys]
        replicas = b % 2
        started = time.perf_counter()
        router.run(commands, keys, replicas=replicas)
        times[replicas].append(time.perf_counter() - started)
    written = {f"bench-wait:{run}:{{user-{b % 50}-{u}}}".encode()
               for b in range(batches) for u in range(users)}  # fmt: skip
    keys = sorted(written)
    router.run([command(b"DEL", k) for k in keys], keys)
    return times


@app.command()
def main(
    batches: Annotated[int, typer.Option(min=2)] = 400,
    users: Annotated[int, typer.Option(min=1, help="User states written per batch.")] = 200,
    state_bytes: Annotated[int, typer.Option(min=1)] = 1800,
) -> None:
    layout = layout_for("cluster")
    launcher = Launcher(layout)
    try:
        launcher.up(REDIS_NODES)
        router = SlotRouter([("localhost", p) for p in layout.redis_cluster_ports])
        measure(router, 20, users, state_bytes)  # connections and the first allocations
        times = measure(router, batches, users, state_bytes)
    finally:
        if launcher.started:
            launcher.down(launcher.started)
    table = Table(title=f"{users} writes of {state_bytes} B a batch, {batches // 2} batches each")
    for column in ("wait for", "median ms", "p99 ms", "mean ms"):
        table.add_column(column)
    for replicas, label in ((0, "nothing (asynchronous)"), (1, "1 replica (WAIT 1)")):
        ms = np.array(times[replicas]) * 1000
        table.add_row(
            label, *(f"{v:.2f}" for v in (np.median(ms), np.quantile(ms, 0.99), ms.mean()))
        )
    console.print(table)


if __name__ == "__main__":
    app()
