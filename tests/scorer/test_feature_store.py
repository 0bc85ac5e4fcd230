"""Online features (the engine over state in Redis) against the offline build, on a real
Redis; two scorers writing the same user; states of another format or feature set."""

from __future__ import annotations

import random
import uuid

import msgpack
import numpy as np
import pytest
from prometheus_client import REGISTRY

from fraudcore.features import FEATURE_INDEX, FEATURE_NAMES, USER_NAMES, TxnInput
from fraudcore.offline import OfflineFeatureBuilder
from fraudcore.user_state import H_FEATURE_SET, StateKind, classify, decode
from scorer.feature_store import FeatureStore, SourcePosition, UserStateConflict
from tests.scorer.streams import online_features, random_stream, same_values


def test_online_features_equal_offline_features_exactly(store: FeatureStore) -> None:
    stream = random_stream(seed=7, n=2500)
    rng = random.Random(3)
    labels = [
        (
            r["merchant_id"],
            r["transaction_id"],
            rng.choice(["fraud", "legit"]),
            ts + rng.uniform(0, 3 * 86400),
        )
        for r, ts in stream
        if rng.random() < 0.08
    ]
    offline = OfflineFeatureBuilder()
    offline.add_labels(labels)
    expected = offline.transactions(stream)
    store.fold_labels([(m, t, lab, round(a * 1000)) for m, t, lab, a in labels])
    got = online_features(store, stream, batch=97)

    same = same_values(got, expected)
    bad = [FEATURE_NAMES[j] for j in np.where(~same.all(axis=0))[0]]
    assert not bad, f"features differ between online and offline: {bad}"
    # The stream really exercises the windows (not an all-zero comparison).
    assert np.nanmax(got[:, FEATURE_INDEX["user_txn_count_24h"]]) >= 3
    assert np.nanmax(got[:, FEATURE_INDEX["merchant_fraud_count_30d"]]) >= 1
    assert np.nanmax(got[:, FEATURE_INDEX["user_speed_kmh_prev"]]) > 100


def test_replayed_batch_gets_the_same_features_and_changes_nothing(store: FeatureStore) -> None:
    stream = random_stream(seed=11, n=600)
    first = online_features(store, stream, batch=100)
    replay = online_features(store, stream[500:], batch=100, first=500)
    assert same_values(replay, first[500:]).all()
    # State after the replay is what it was: the next transactions see no double count.
    offline = OfflineFeatureBuilder()
    offline.transactions(stream)
    more = random_stream(seed=12, n=50, start=stream[-1][1] + 10)
    for i, (record, _) in enumerate(more):  # same users and merchants as the first stream
        record["user_id"] = stream[i * 7 % len(stream)][0]["user_id"]
        record["merchant_id"] = stream[i * 11 % len(stream)][0]["merchant_id"]
    expected_next = offline.transactions(more)
    got_next = online_features(store, more, batch=25, first=600)
    assert same_values(got_next, expected_next).all()


def test_merchant_counts_skip_offsets_already_counted(store: FeatureStore) -> None:
    day = 86_400.0
    start = 1_780_000_000.0 // day * day
    record = {"user_id": "u", "merchant_id": f"m-{uuid.uuid4().hex}", "amount": 10.0}
    yesterday = [
        TxnInput.from_record({**record, "transaction_id": f"y{i}"}, start + i) for i in range(5)
    ]
    store.compute(yesterday, [SourcePosition("t:0", i) for i in range(5)])
    # The same offsets again (a replay after an aborted Kafka transaction), different ids.
    again = [
        TxnInput.from_record({**record, "transaction_id": f"z{i}"}, start + i) for i in range(5)
    ]
    store.compute(again, [SourcePosition("t:0", i) for i in range(5)])
    today = TxnInput.from_record({**record, "transaction_id": "today"}, start + day + 60)
    features = store.compute([today], readonly=True)[0]
    assert features[FEATURE_INDEX["merchant_txn_count_1d"]] == 5


def test_label_counts_only_from_its_available_at(store: FeatureStore) -> None:
    merchant = f"m-{uuid.uuid4().hex}"
    t = 1_780_000_000.0
    store.fold_labels([(merchant, "fraud-1", "fraud", round((t + 100) * 1000))])
    store.fold_labels([(merchant, "fraud-1", "fraud", round((t + 50) * 1000))])  # duplicate
    store.fold_labels([(merchant, "legit-1", "legit", round(t * 1000))])

    def frauds_at(ts: float) -> float:
        tx = TxnInput.from_record(
            {"transaction_id": "q", "user_id": "u", "merchant_id": merchant, "amount": 1.0}, ts
        )
        return store.compute([tx], readonly=True)[0][FEATURE_INDEX["merchant_fraud_count_1d"]]

    assert frauds_at(t + 99) == 0  # the label is not known yet
    assert frauds_at(t + 100) == 1  # known from available_at on, counted once
    assert frauds_at(t + 100 + 86_400) == 0  # out of the 1-day window


def test_readonly_compute_changes_no_state(store: FeatureStore) -> None:
    stream = random_stream(seed=5, n=200)
    txs = [TxnInput.from_record(r, ts) for r, ts in stream]
    before = store.compute(txs, readonly=True)
    again = store.compute(txs, readonly=True)
    assert same_values(before, again).all()
    assert not store.single_node.keys(f"{store.prefix}:*")


def test_a_user_written_by_another_scorer_meanwhile_is_refused(store: FeatureStore) -> None:
    """A zombie and the new owner of a partition compute the same batch of one user from
    the same state: the write that comes second is refused and nothing of it lands; the
    batch computed again from what Redis holds is a replay, with the offline vectors."""
    stream = random_stream(seed=13, n=60, users=1, merchants=3)
    online_features(store, stream[:30], batch=30)
    new_owner = FeatureStore(store.single_node, key_prefix=store.prefix)

    txs = [TxnInput.from_record(r, ts) for r, ts in stream[30:]]
    positions = [SourcePosition("t:0", 30 + i) for i in range(len(txs))]
    plan = store.plan(txs, positions)
    replies = store.run_reads(plan)  # the zombie reads ...
    theirs = new_owner.compute(txs, positions)  # ... the new owner computes and writes ...
    _, writes = store.finish(plan, replies)
    user_key = store.user_key(txs[0].user_id)
    before = store.single_node.get(user_key)
    with pytest.raises(UserStateConflict) as refused:  # ... the zombie's write is refused
        store.check_writes(writes, store.run_writes(writes))
    assert refused.value.users == [txs[0].user_id]
    assert store.single_node.get(user_key) == before

    expected = OfflineFeatureBuilder().transactions(stream)[30:]
    assert same_values(theirs, expected).all()
    assert same_values(store.compute(txs, positions), expected).all()
    assert store.single_node.get(user_key) == before  # a replay changes nothing


def test_a_user_dropped_from_the_cache_after_the_plan_is_read_then(store: FeatureStore) -> None:
    """A user this process wrote is not read again; if its cached state is gone by the
    time the batch's replies are in (a conflict elsewhere, a rebalance), it is read then."""
    stream = random_stream(seed=14, n=120, users=4, merchants=3)
    online_features(store, stream[:60], batch=30)
    txs = [TxnInput.from_record(r, ts) for r, ts in stream[60:]]
    positions = [SourcePosition("t:0", 60 + i) for i in range(len(txs))]
    plan = store.plan(txs, positions)
    assert plan.n_gets == 0  # every user is in the cache: no GET
    replies = store.run_reads(plan)
    store.forget_written()
    got, writes = store.finish(plan, replies)
    store.check_writes(writes, store.run_writes(writes))
    assert same_values(got, OfflineFeatureBuilder().transactions(stream)[60:]).all()


def test_long_out_of_order_stream_equals_offline_in_the_stored_format(
    store: FeatureStore,
) -> None:
    """Events up to three days out of order (into earlier day buckets), 30-day expiry,
    small batches: every state in Redis is of the current format and feature set."""
    rng = random.Random(23)
    stream = [
        (record, ts - rng.uniform(0, 3 * 86_400) if rng.random() < 0.15 else ts)
        for record, ts in random_stream(seed=22, n=1500, users=25, mean_gap_s=2400)
    ]
    expected = OfflineFeatureBuilder().transactions(stream)
    got = online_features(store, stream, batch=37)
    assert same_values(got, expected).all()
    keys = sorted({store.user_key(r["user_id"]) for r, _ in stream})
    assert {classify(raw or b"") for raw in store.single_node.mget(keys)} == {StateKind.CURRENT}
    assert np.nanmax(got[:, FEATURE_INDEX["user_txn_count_7d"]]) >= 5


def _foreign_state(current: bytes, kind: StateKind) -> bytes:
    """A state of `kind`, one this scorer cannot read as its own, with version word 41."""
    version_word = (41).to_bytes(8, "little")
    if kind is StateKind.OTHER_FORMAT:
        return b"\x04" + b"\x00" * 7 + version_word + b"\x00" * 56
    if kind is StateKind.OTHER_FEATURE_SET:
        words = bytearray(current)
        words[8 * H_FEATURE_SET : 8 * H_FEATURE_SET + 8] = b"\x01" * 8
        return bytes(words[:8]) + version_word + bytes(words[16:])
    return current[:8] + version_word + current[16:-8]  # one word short


@pytest.mark.parametrize(
    "kind", [StateKind.OTHER_FEATURE_SET, StateKind.OTHER_FORMAT, StateKind.CORRUPT]
)
def test_a_state_of_another_kind_starts_the_user_afresh_on_purpose(
    store: FeatureStore, kind: StateKind
) -> None:
    """Not a crash: counted by kind, the user's features are a new card's, its state is
    rewritten in this format under the old version + 1, and the compare-and-set still
    fences a writer that read the foreign state."""
    stream = random_stream(seed=31, n=80, users=1, merchants=4)
    user = stream[0][0]["user_id"]
    online_features(store, stream[:40], batch=40)
    current = store.single_node.get(store.user_key(user))
    assert current is not None and classify(current) is StateKind.CURRENT
    foreign = _foreign_state(current, kind)
    assert classify(foreign) is kind
    store.single_node.set(store.user_key(user), foreign)
    store.forget_written()
    resets = REGISTRY.get_sample_value("scorer_user_states_reset_total", {"kind": kind.value})

    later = stream[40:]
    zombie = FeatureStore(store.single_node, key_prefix=store.prefix)
    txs = [TxnInput.from_record(r, ts) for r, ts in later]
    positions = [SourcePosition("t:0", 40 + i) for i in range(len(txs))]
    zombie_plan = zombie.plan(txs, positions)
    zombie_replies = zombie.run_reads(zombie_plan)

    got = online_features(store, later, batch=40, first=40)
    fresh = OfflineFeatureBuilder().transactions(later)
    user_columns = [FEATURE_INDEX[n] for n in USER_NAMES]
    assert same_values(got[:, user_columns], fresh[:, user_columns]).all()
    after = REGISTRY.get_sample_value("scorer_user_states_reset_total", {"kind": kind.value})
    assert after == (resets or 0) + 1
    stored = store.single_node.get(store.user_key(user))
    assert stored is not None and classify(stored) is StateKind.CURRENT
    assert decode(stored).version == 42

    _, writes = zombie.finish(zombie_plan, zombie_replies)
    with pytest.raises(UserStateConflict):
        zombie.check_writes(writes, zombie.run_writes(writes))
    assert store.single_node.get(store.user_key(user)) == stored


def test_a_merchant_state_of_the_msgpack_layout_is_upgraded_in_place(
    store: FeatureStore,
) -> None:
    """The merchant state as one msgpack string {days, marks, frauds} (the layout before
    the hash) is rewritten as the hash by the first call, counts and labels kept."""
    day_ms = 86_400_000
    today = 1_780_000_000_000 // day_ms
    merchant = f"m-{uuid.uuid4().hex}"
    key = store.merchant_key(merchant)
    old = {today - 1: 4, today - 3: 2, today - 40: 9}
    store.single_node.set(
        key, msgpack.packb([old, {"t:0": 17}, {"f-1": (today - 2) * day_ms}]), px=10**9
    )
    record = {"user_id": "u", "merchant_id": merchant, "amount": 1.0}
    tx = TxnInput.from_record({**record, "transaction_id": "a"}, today * 86_400 + 60)
    vector = store.compute([tx], [SourcePosition("t:0", 17)])[0]  # offset 17: counted before
    assert vector[FEATURE_INDEX["merchant_txn_count_1d"]] == 4
    assert vector[FEATURE_INDEX["merchant_txn_count_7d"]] == 6
    assert vector[FEATURE_INDEX["merchant_fraud_count_7d"]] == 1
    state = store.merchant_state(merchant)
    assert state.days == old and state.marks == {"t:0": 17}
    assert state.frauds == {"f-1": (today - 2) * day_ms}
    assert store.single_node.type(key) == b"hash" and 0 < store.single_node.pttl(key) <= 10**9
    store.compute([tx._replace(transaction_id="b")], [SourcePosition("t:0", 18)])
    assert store.merchant_state(merchant).days == {**old, today: 1}
