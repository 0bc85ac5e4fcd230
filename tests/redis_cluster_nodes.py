"""The cluster profile's six Redis nodes for a test module: started unless running, and
stopped afterwards only if this started them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from launcher.layout import layout_for
from launcher.runner import Launcher
from tests.private_stack import PrivateStack

REDIS_NODES = [f"redis-{i}" for i in range(1, 7)]


@contextmanager
def redis_cluster_nodes() -> Iterator[PrivateStack]:
    """The six nodes, to kill and start by name (redis-1 .. redis-6)."""
    launcher = Launcher(layout_for("cluster"))
    try:
        launcher.up(REDIS_NODES)
        yield PrivateStack(launcher)
    finally:
        if launcher.started:
            launcher.down(launcher.started)


@contextmanager
def redis_cluster_seeds() -> Iterator[list[tuple[str, int]]]:
    with redis_cluster_nodes() as nodes:
        yield seeds_of(nodes)


def seeds_of(nodes: PrivateStack) -> list[tuple[str, int]]:
    return [("localhost", port) for port in nodes.layout.redis_cluster_ports]


def node_name(nodes: PrivateStack, address: tuple[str, int]) -> str:
    """The launcher's name of the node at `address`."""
    return f"redis-{nodes.layout.redis_cluster_ports.index(address[1]) + 1}"


def node_id(address: tuple[str, int]) -> str:
    return str(redis.Redis(*address).execute_command("CLUSTER MYID").decode())


def move_slot(
    slot: int, source: tuple[str, int], target: tuple[str, int], masters: list[tuple[str, int]]
) -> int:
    """Move a hash slot and its keys from one master to another, the way
    `redis-cli --cluster reshard` does: IMPORTING / MIGRATING, MIGRATE the keys, then
    every master told the new owner. Returns how many keys moved."""
    source_client, target_client = redis.Redis(*source), redis.Redis(*target)
    source_id, target_id = node_id(source), node_id(target)
    target_client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    source_client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    moved = 0
    while keys := source_client.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        source_client.execute_command("MIGRATE", target[0], target[1], "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
    for address in [target, source, *(m for m in masters if m not in (source, target))]:
        redis.Redis(*address).execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    return moved
