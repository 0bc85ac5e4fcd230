"""scorer.slot_routing against the cluster profile's real Redis Cluster: commands go to
the master of their slot, and MOVED and ASK redirections are followed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import NamedTuple

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError

from scorer.slot_routing import Address, ReplicaLagError, SlotRouter, cluster_seeds, command
from tests.redis_cluster_nodes import node_id, redis_cluster_seeds


def test_cluster_seeds_reads_every_node_of_the_url() -> None:
    assert cluster_seeds("redis+cluster://localhost:17001,127.0.0.1:17002") == [
        ("localhost", 17001),
        ("127.0.0.1", 17002),
    ]
    assert cluster_seeds("redis://localhost:6379/0") is None
    with pytest.raises(ValueError, match="'localhost' is not host:port"):
        cluster_seeds("redis+cluster://localhost")


@pytest.fixture(scope="module")
def seeds() -> Iterator[list[Address]]:
    with redis_cluster_seeds() as found:
        yield found


def _masters(router: SlotRouter) -> list[redis.Redis]:
    return [redis.Redis(*m) for m in router.masters]


@pytest.mark.cluster
def test_each_command_runs_on_the_master_of_its_slot(seeds: list[Address]) -> None:
    router = SlotRouter(seeds)
    assert len(router.masters) == 3
    run = uuid.uuid4().hex
    keys = [f"route:{run}:{{user-{i}}}".encode() for i in range(300)]
    sets = router.run([command(b"SET", k, b"v-%d" % i, b"EX", b"60") for i, k in enumerate(keys)],
                      keys)  # fmt: skip
    assert sets == [b"OK"] * len(keys)
    assert router.run([command(b"GET", k) for k in keys], keys) == [
        b"v-%d" % i for i in range(len(keys))
    ]
    # Each key is where the cluster itself says its slot is served, and only there.
    owners = {router.owner(k) for k in keys}
    assert owners == set(router.masters)
    for key in keys[:30]:
        owner = router.owner(key)
        assert redis.Redis(*owner).exists(key) == 1
        assert key_slot(key) == redis.Redis(*owner).cluster("keyslot", key)
        for master in router.masters:
            if master != owner:
                with pytest.raises(MovedError, match=f":{owner[1]}$"):
                    redis.Redis(*master).exists(key)


class SlotToMove(NamedTuple):
    key: bytes  # a key of the slot, which holds no key yet
    slot: int
    source: Address  # its master
    target: Address  # another master


def _slot_to_move(router: SlotRouter) -> SlotToMove:
    key = f"route:{{{uuid.uuid4().hex}}}".encode()
    slot = key_slot(key)
    source = router.owner(key)
    assert redis.Redis(*source).cluster("countkeysinslot", slot) == 0
    return SlotToMove(key, slot, source, next(m for m in router.masters if m != source))


def _assign(router: SlotRouter, slot: int, node: Address) -> None:
    owner_id = node_id(node)
    for master in _masters(router):
        master.execute_command("CLUSTER SETSLOT", slot, "NODE", owner_id)


@pytest.mark.cluster
def test_a_moved_slot_is_found_at_its_new_master(seeds: list[Address]) -> None:
    router = SlotRouter(seeds)
    key, slot, source, target = _slot_to_move(router)
    _assign(router, slot, target)  # the router's map is stale from here on
    try:
        assert router.run([command(b"SET", key, b"moved", b"EX", b"60")], [key]) == [b"OK"]
        assert router.owner(key) == target  # the MOVED reply made it read the map again
        assert redis.Redis(*target).get(key) == b"moved"
        assert redis.Redis(*target).delete(key) == 1
    finally:
        _assign(router, slot, source)


@pytest.mark.cluster
def test_a_key_of_a_migrating_slot_is_asked_for_at_the_target(seeds: list[Address]) -> None:
    router = SlotRouter(seeds)
    key, slot, source, target = _slot_to_move(router)
    source_client, target_client = redis.Redis(*source), redis.Redis(*target)
    target_client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", node_id(source))
    source_client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", node_id(target))
    try:
        # The key is not at the source: it answers ASK, and the target takes the command.
        assert router.run([command(b"SET", key, b"asked", b"EX", b"60")], [key]) == [b"OK"]
        assert router.run([command(b"GET", key)], [key]) == [b"asked"]
        assert router.owner(key) == source  # an ASK leaves the slot map as it is
        with pytest.raises(AskError):  # not at the source (it would answer it there)
            source_client.exists(key)
        on_target = target_client.pipeline(transaction=False)
        on_target.execute_command("ASKING")  # for the next command, on the same connection
        on_target.exists(key)
        assert on_target.execute() == [True, 1]
        assert router.run([command(b"DEL", key)], [key]) == [1]
    finally:
        # Nothing of the slot may stay at the target once the migration is called off.
        cleanup = target_client.pipeline(transaction=False)
        cleanup.execute_command("ASKING")
        cleanup.delete(key)
        cleanup.execute()
        for client in (source_client, target_client):
            client.execute_command("CLUSTER SETSLOT", slot, "STABLE")


@pytest.mark.cluster
def test_writes_can_wait_for_a_replica_of_each_master(seeds: list[Address]) -> None:
    router = SlotRouter(seeds)
    run = uuid.uuid4().hex
    keys = [f"route:{run}:{{user-{i}}}".encode() for i in range(60)]
    sets = [command(b"SET", k, b"w-%d" % i, b"EX", b"60") for i, k in enumerate(keys)]
    assert router.run(sets, keys, replicas=1) == [b"OK"] * len(keys)
    # Each master has one replica, so two never acknowledge: that is reported, and the
    # writes themselves still ran.
    with pytest.raises(ReplicaLagError, match=r"1 of 2 replicas of \S+ acknowledged .* 50 ms"):
        router.run(sets, keys, replicas=2, wait_timeout_ms=50)
    assert router.run([command(b"GET", k) for k in keys], keys) == [
        b"w-%d" % i for i in range(len(keys))
    ]
