"""The cluster profile's six Redis nodes for a test module: started unless running, and
stopped afterwards only if this started them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from launcher.layout import layout_for
from launcher.runner import Launcher

REDIS_NODES = [f"redis-{i}" for i in range(1, 7)]


@contextmanager
def redis_cluster_seeds() -> Iterator[list[tuple[str, int]]]:
    layout = layout_for("cluster")
    launcher = Launcher(layout)
    try:
        launcher.up(REDIS_NODES)
        yield [("localhost", port) for port in layout.redis_cluster_ports]
    finally:
        if launcher.started:
            launcher.down(launcher.started)
