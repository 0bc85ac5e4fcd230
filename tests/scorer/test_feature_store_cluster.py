"""The feature store on the cluster profile's real Redis Cluster (three masters, a replica
each): the same features as the offline build, bit for bit, with the state spread over
every master; a slot moved mid-stream, keys and all; scripts lost by the masters; the
scorer's batch calls (RoutedFeatures) and a second scorer's conflicting write."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from redis.crc import key_slot

from bench.deployment import delete_keys
from fraudcore.features import FEATURE_INDEX, FEATURE_NAMES, TxnInput
from fraudcore.offline import OfflineFeatureBuilder
from scorer.feature_store import FeatureStore, SourcePosition, UserStateConflict
from scorer.routed_features import RoutedFeatures
from scorer.slot_routing import CLUSTER_SCHEME, Address, SlotRouter
from tests.redis_cluster_nodes import move_slot, redis_cluster_seeds
from tests.scorer.streams import online_features, random_stream, same_values

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def seeds() -> Iterator[list[Address]]:
    with redis_cluster_seeds() as found:
        yield found


@pytest.fixture
def store(seeds: list[Address]) -> Iterator[FeatureStore]:
    """A store on the cluster under a key prefix of its own, waiting for one replica of
    every master it writes to, as the cluster profile's scorer does."""
    router = SlotRouter(seeds)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield FeatureStore(router, key_prefix=prefix, replica_acks=1)
    delete_keys(CLUSTER_SCHEME + "://" + ",".join(f"{h}:{p}" for h, p in seeds), f"{prefix}:*")


def _offline(stream: list, labels: list) -> np.ndarray:
    builder = OfflineFeatureBuilder()
    builder.add_labels(labels)
    return builder.transactions(stream)


def _labels(stream: list, seed: int) -> list[tuple[str, str, str, float]]:
    rng = random.Random(seed)
    return [
        (r["merchant_id"], r["transaction_id"], rng.choice(["fraud", "legit"]),
         ts + rng.uniform(0, 3 * 86400))
        for r, ts in stream
        if rng.random() < 0.08
    ]  # fmt: skip


def _assert_exact(got: np.ndarray, expected: np.ndarray) -> None:
    same = same_values(got, expected)
    bad = [FEATURE_NAMES[j] for j in np.where(~same.all(axis=0))[0]]
    assert not bad, f"features differ between the cluster and the offline build: {bad}"


def test_features_on_the_cluster_equal_offline_features_exactly(store: FeatureStore) -> None:
    stream = random_stream(seed=11, n=2500, users=40, merchants=12)
    labels = _labels(stream, seed=5)
    store.fold_labels([(m, t, lab, round(a * 1000)) for m, t, lab, a in labels])
    got = online_features(store, stream, batch=97)
    _assert_exact(got, _offline(stream, labels))
    assert np.nanmax(got[:, FEATURE_INDEX["user_txn_count_24h"]]) >= 3
    assert np.nanmax(got[:, FEATURE_INDEX["merchant_fraud_count_30d"]]) >= 1
    # The state really is spread: every master holds some users and some merchants.
    assert store.router is not None
    owners_of_users = {store.router.owner(store.user_key(r["user_id"]).encode()) for r, _ in stream}
    owners_of_merchants = {
        store.router.owner(store.merchant_key(r["merchant_id"]).encode()) for r, _ in stream
    }
    assert owners_of_users == owners_of_merchants == set(store.router.masters)
    # The last batch replayed (a crash before its Kafka commit) gets the same vectors and
    # changes no count.
    before = {m: store.merchant_state(m).days for m in {r["merchant_id"] for r, _ in stream}}
    last = len(stream) - 97
    _assert_exact(online_features(store, stream[last:], batch=97, first=last), got[last:])
    assert {m: store.merchant_state(m).days for m in before} == before


def test_a_slot_moved_with_its_keys_mid_stream_keeps_the_features_exact(
    store: FeatureStore, seeds: list[Address]
) -> None:
    """The slot of the busiest user and of the busiest merchant move to another master,
    keys and all, between two batches: the store's slot map is stale, MOVED sends its
    calls to the new owner, and nothing changes in the features."""
    stream = random_stream(seed=12, n=1600, users=15, merchants=6)
    half = len(stream) // 2
    assert store.router is not None
    router = store.router
    busiest_user = max({r["user_id"] for r, _ in stream},
                       key=lambda u: sum(r["user_id"] == u for r, _ in stream))  # fmt: skip
    busiest_merchant = max({r["merchant_id"] for r, _ in stream},
                           key=lambda m: sum(r["merchant_id"] == m for r, _ in stream))  # fmt: skip
    keys = [store.user_key(busiest_user).encode(), store.merchant_key(busiest_merchant).encode()]
    first = online_features(store, stream[:half], batch=50)
    masters = list(router.masters)
    moved_back: list[tuple[int, Address, Address]] = []
    try:
        for key in keys:
            source = router.owner(key)
            target = next(m for m in masters if m != source)
            assert move_slot(key_slot(key), source, target, masters) >= 1  # its state moved too
            moved_back.append((key_slot(key), target, source))
        second = online_features(store, stream[half:], batch=50, first=half)
        # The store found each key at its new master (MOVED made it read the map again).
        assert [router.owner(k) for k in keys] == [t for _, t, _ in moved_back]
    finally:
        for slot, now_at, home in moved_back:
            move_slot(slot, now_at, home, masters)
    _assert_exact(np.vstack([first, second]), _offline(stream, []))


def test_scripts_lost_by_every_master_are_loaded_again(store: FeatureStore) -> None:
    stream = random_stream(seed=13, n=400, users=10, merchants=5)
    first = online_features(store, stream[:200], batch=40)
    assert store.router is not None
    for master in store.router.masters:
        redis.Redis(*master).script_flush()
    second = online_features(store, stream[200:], batch=40, first=200)
    _assert_exact(np.vstack([first, second]), _offline(stream, []))


def test_the_scorers_batch_calls_and_a_second_scorers_write(store: FeatureStore) -> None:
    """RoutedFeatures, as the scorer drives it: submit, result, confirm. A batch whose
    user another process wrote since it was read is refused at confirm, and computing it
    again gives the uninterrupted features."""
    stream = random_stream(seed=14, n=300, users=6, merchants=3)
    txs = [TxnInput.from_record(r, ts) for r, ts in stream]
    positions = [SourcePosition("t:0", i) for i in range(len(txs))]
    features = RoutedFeatures(store)
    pending = features.submit(txs[:150], positions[:150])
    first = features.result(pending)
    features.confirm(pending)

    other = FeatureStore(store.router or store.single_node, key_prefix=store.prefix)
    pending = features.submit(txs[150:], positions[150:])
    other.compute(txs[150:200], positions[150:200])  # another scorer, same users, meanwhile
    features.result(pending)
    with pytest.raises(UserStateConflict):
        features.confirm(pending)
    store.forget_written()
    pending = features.submit(txs[150:], positions[150:])
    second = features.result(pending)
    features.confirm(pending)
    _assert_exact(np.vstack([first, second]), _offline(stream, []))
