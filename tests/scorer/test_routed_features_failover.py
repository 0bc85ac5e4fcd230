"""A Redis master killed right after a batch's writes. Replication is asynchronous, so a
promoted replica may lack what its master acknowledged; the scorer's guarantee is that
a batch counts as confirmed (and is committed to Kafka) only once one replica of every
master it wrote to holds it (SCORER_REDIS_REPLICA_ACKS=1, WAIT 1).

- A batch confirmed the instant before its master dies is on the promoted replica: a
  new store (a scorer restarted elsewhere, nothing cached) carries on from it and every
  feature equals the offline build's.
- A batch whose replica has not acknowledged it is refused (ReplicaLagError). Its
  writes die with the master; computed again from the promoted state, it gives the
  same features, because it was never committed.

Marked `cluster`: the cluster profile's own six Redis nodes, started unless running and
stopped afterwards only if this module started them.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from bench.deployment import delete_keys
from fraudcore.features import FEATURE_NAMES, TxnInput
from fraudcore.offline import OfflineFeatureBuilder
from scorer.feature_store import FeatureStore, SourcePosition
from scorer.routed_features import RoutedFeatures
from scorer.slot_routing import CLUSTER_SCHEME, Address, ReplicaLagError, SlotRouter
from tests.private_stack import PrivateStack
from tests.redis_cluster_nodes import node_name, redis_cluster_nodes, seeds_of
from tests.scorer.harness import wait_until
from tests.scorer.streams import online_features, random_stream, same_values

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

BATCH = 100


@pytest.fixture(scope="module")
def nodes() -> Iterator[PrivateStack]:
    with redis_cluster_nodes() as found:
        yield found


@pytest.fixture
def prefix(nodes: PrivateStack) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield prefix
    delete_keys(CLUSTER_SCHEME + "://" + ",".join(f"{h}:{p}" for h, p in seeds_of(nodes)),
                f"{prefix}:*")  # fmt: skip


def _store(nodes: PrivateStack, prefix: str) -> FeatureStore:
    """A store as the cluster profile's scorer has it: one replica acknowledges."""
    return FeatureStore(SlotRouter(seeds_of(nodes)), key_prefix=prefix, replica_acks=1)


def _confirmed(features: RoutedFeatures, stream: list, first: int, last: int) -> np.ndarray:
    """Transactions first..last-1 through submit, result and confirm, BATCH at a time."""
    rows = []
    for start in range(first, last, BATCH):
        chunk = stream[start : min(start + BATCH, last)]
        txs = [TxnInput.from_record(r, ts) for r, ts in chunk]
        positions = [SourcePosition("t:0", start + i) for i in range(len(chunk))]
        pending = features.submit(txs, positions)
        rows.append(features.result(pending).copy())
        features.confirm(pending)
    return np.vstack(rows)


def _master_of_most_users(store: FeatureStore, chunk: list) -> tuple[Address, Address]:
    """The master holding most of the chunk's users, and its replica."""
    assert store.router is not None
    owners = Counter(store.router.owner(store.user_key(r["user_id"]).encode()) for r, _ in chunk)
    (master, _), = owners.most_common(1)  # fmt: skip
    replica = redis.Redis(*master).info("replication")["slave0"]
    return master, (master[0], int(replica["port"]))


def _promote_then_rejoin(nodes: PrivateStack, master: Address, replica: Address) -> None:
    """Wait for the cluster to promote `replica` (cluster-node-timeout 5 s), then start the
    dead master again: it rejoins as the new master's replica, resynced from it."""
    promoted = redis.Redis(*replica)
    wait_until(lambda: promoted.info("replication")["role"] == "master", 60,
               f"the replica on {replica[1]} to be promoted")  # fmt: skip
    nodes.start(node_name(nodes, master))
    old = redis.Redis(*master)
    wait_until(lambda: old.info("replication").get("master_link_status") == "up", 60,
               f"the old master on {master[1]} to be back as a replica")  # fmt: skip


def _assert_exact(got: np.ndarray, stream: list) -> None:
    expected = OfflineFeatureBuilder().transactions(stream)
    same = same_values(got, expected)
    bad = [FEATURE_NAMES[j] for j in np.where(~same.all(axis=0))[0]]
    assert not bad, f"features differ from the offline build after the failover: {bad}"


def test_a_batch_confirmed_just_before_its_master_dies_is_on_the_promoted_replica(
    nodes: PrivateStack, prefix: str
) -> None:
    stream = random_stream(seed=31, n=1200, users=24, merchants=6)
    half = 600
    store = _store(nodes, prefix)
    master, replica = _master_of_most_users(store, stream[half - BATCH : half])
    first = _confirmed(RoutedFeatures(store), stream, 0, half)
    nodes.kill(node_name(nodes, master))  # the moment the last batch's confirm returned
    _promote_then_rejoin(nodes, master, replica)

    # Any of the last batch's writes lost would show in the counts, amounts and gaps of
    # its users' and merchants' next transactions.
    after = online_features(_store(nodes, prefix), stream[half:], batch=BATCH, first=half)
    _assert_exact(np.vstack([first, after]), stream)


def test_a_batch_its_replica_did_not_acknowledge_is_refused_and_computed_again(
    nodes: PrivateStack, prefix: str
) -> None:
    stream = random_stream(seed=32, n=900, users=24, merchants=6)
    cut = 400
    store = _store(nodes, prefix)
    features = RoutedFeatures(store)
    first = _confirmed(features, stream, 0, cut)
    master, replica = _master_of_most_users(store, stream[cut : cut + BATCH])

    frozen = nodes.pid(node_name(nodes, replica))
    os.kill(frozen, signal.SIGSTOP)  # the replica stops reading its master's stream
    try:
        with pytest.raises(ReplicaLagError, match="replicas of"):
            _confirmed(features, stream, cut, cut + BATCH)
        # The batch's writes are on the master alone, and die with it.
        nodes.kill(node_name(nodes, master))
    finally:
        os.kill(frozen, signal.SIGCONT)
    _promote_then_rejoin(nodes, master, replica)

    # Not confirmed, so not committed: the scorer computes the batch again from the
    # promoted state, and carries on.
    again = online_features(_store(nodes, prefix), stream[cut:], batch=BATCH, first=cut)
    _assert_exact(np.vstack([first, again]), stream)
