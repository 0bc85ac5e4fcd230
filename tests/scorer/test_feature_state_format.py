"""The user state's storage format: states written by the format-1 script (nested msgpack
tables, kept in tests/scorer/format1/) are read by the current script, rewritten as format 2
on first change, and give exactly the offline features before, across and after the switch,
replays included."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from fraudcore.features import FEATURE_INDEX, FEATURE_NAMES, OfflineFeatureBuilder, TxnInput
from scorer.feature_store import FeatureStore, SourcePosition
from tests.scorer.streams import random_stream

FORMAT1_USER_SCRIPT = Path(__file__).parent / "format1" / "user.lua"


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _compute(store: FeatureStore, stream, first: int, batch: int) -> np.ndarray:
    rows = []
    for start in range(0, len(stream), batch):
        chunk = stream[start : start + batch]
        txs = [TxnInput.from_record(r, ts) for r, ts in chunk]
        positions = [SourcePosition("t:0", first + start + i) for i in range(len(chunk))]
        rows.append(store.compute(txs, positions))
    return np.vstack(rows)


def _formats(store: FeatureStore, stream) -> set[int]:
    """First byte of every user state: 0x95 for format 1 (an array of 5), 2 for format 2."""
    keys = {store.user_key(r["user_id"]) for r, _ in stream}
    return {raw[0] for raw in store.client.mget(sorted(keys)) if raw}


def test_format1_states_upgrade_with_identical_features(store: FeatureStore) -> None:
    # ~40 days, so day buckets written in format 1 expire under format 2.
    stream = random_stream(seed=21, n=2000, users=15, mean_gap_s=1800)
    expected = OfflineFeatureBuilder().transactions(stream)
    half = len(stream) // 2

    current = store._sha["user"]
    store._sha["user"] = str(store.client.script_load(FORMAT1_USER_SCRIPT.read_text()))
    before = _compute(store, stream[:half], first=0, batch=61)
    assert _formats(store, stream[:half]) == {0x95}
    store._sha["user"] = current

    # Replays of transactions stored in format 1 (the tail is still in the 24 h window)
    # get their first vectors back and change nothing, so the states stay format 1.
    tail = stream[half - 30 : half]
    replayed = _compute(store, tail, first=half - 30, batch=10)
    assert _same(replayed, before[-30:]).all()
    assert _formats(store, stream[:half]) == {0x95}

    after = _compute(store, stream[half:], first=half, batch=61)
    assert _formats(store, stream) == {2}
    got = np.vstack([before, after])
    bad = [FEATURE_NAMES[j] for j in np.where(~_same(got, expected).all(axis=0))[0]]
    assert not bad, f"features differ from offline across the format switch: {bad}"
    assert np.nanmax(got[:, FEATURE_INDEX["user_txn_count_30d"]]) >= 30


def test_format2_long_stream_equals_offline(store: FeatureStore) -> None:
    """Events up to three days out of order (into day buckets already closed) and 30-day
    expiry, format 2 throughout."""
    rng = random.Random(23)
    stream = [
        (record, ts - rng.uniform(0, 3 * 86_400) if rng.random() < 0.15 else ts)
        for record, ts in random_stream(seed=22, n=1500, users=25, mean_gap_s=2400)
    ]
    expected = OfflineFeatureBuilder().transactions(stream)
    got = _compute(store, stream, first=0, batch=37)
    assert _formats(store, stream) == {2}
    assert _same(got, expected).all()
    assert np.nanmax(got[:, FEATURE_INDEX["user_txn_count_7d"]]) >= 5
