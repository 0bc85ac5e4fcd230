"""bench.replica_wait's measurement runs on the real Redis Cluster, both variants."""

from __future__ import annotations

import pytest

from bench.replica_wait import measure
from scorer.slot_routing import SlotRouter
from tests.redis_cluster_nodes import redis_cluster_seeds


@pytest.mark.cluster
def test_both_variants_are_timed_on_alternate_batches() -> None:
    with redis_cluster_seeds() as seeds:
        times = measure(SlotRouter(seeds), batches=6, users=20, state_bytes=100)
    assert sorted(times) == [0, 1]
    assert [len(times[0]), len(times[1])] == [3, 3]
    assert all(t > 0 for ts in times.values() for t in ts)
