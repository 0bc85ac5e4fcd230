"""The user state's storage format: states written by the Lua scripts of earlier versions
(format 1, nested msgpack tables; format 2, flat with msgpack replay vectors; format 3,
flat with running totals: tests/scorer/format{1,2,3}/user.lua) are read by the scorer's
kernel, rewritten as format 4 on first change, and give exactly the offline features
before, across and after the switch, replays included.

The scripts spoke their own protocols (msgpack arguments; msgpack or packed-double
replies); `_legacy` below speaks them."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import numpy as np
import pytest

from fraudcore.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    STATELESS_NAMES,
    USER_NAMES,
    OfflineFeatureBuilder,
    TxnInput,
    stateless_matrix,
)
from scorer.feature_store import FeatureStore, SourcePosition
from tests.scorer.streams import random_stream

HERE = Path(__file__).parent
USER = slice(len(STATELESS_NAMES), len(STATELESS_NAMES) + len(USER_NAMES))


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, signs of zero included; NaN ("missing") is one value whatever its sign
    (Lua's 0/0 has the sign bit set, Python's and the kernel's NaN has not)."""
    canonical = [np.where(np.isnan(x), np.nan, x) for x in (a, b)]
    return a.shape == b.shape and canonical[0].tobytes() == canonical[1].tobytes()


def _txs(chunk) -> list[TxnInput]:
    return [TxnInput.from_record(r, ts) for r, ts in chunk]


def _compute(store: FeatureStore, stream, first: int, batch: int) -> np.ndarray:
    rows = []
    for start in range(0, len(stream), batch):
        chunk = stream[start : start + batch]
        positions = [SourcePosition("t:0", first + start + i) for i in range(len(chunk))]
        rows.append(store.compute(_txs(chunk), positions))
    return np.vstack(rows)


def _legacy(
    store: FeatureStore, sha: str, stream, first: int, batch: int, fmt: str = "format2"
) -> np.ndarray:
    """Vectors with the user features from an earlier user script and the merchant ones
    from the current merchant script, which the earlier user scripts shipped with in the
    same form. Protocols: formats 1 and 2 take one msgpack array of {txid, ts, cents,
    merchant, country, lat|false, lon|false, device} per user and answer a msgpack array
    of vectors; format 3 takes the TxnInput tuples and answers packed doubles."""
    rows = []
    for start in range(0, len(stream), batch):
        txs = _txs(stream[start : start + batch])
        out = np.full((len(txs), len(FEATURE_NAMES)), np.nan)
        out[:, : USER.start] = stateless_matrix(
            np.array([tx.ts_ms for tx in txs]), np.array([tx.cents for tx in txs])
        )
        by_user: dict[str, list[int]] = {}
        by_merchant: dict[str, list[int]] = {}
        for i, tx in enumerate(txs):
            by_user.setdefault(tx.user_id, []).append(i)
            by_merchant.setdefault(tx.merchant_id, []).append(i)
        for merchant_id, members in by_merchant.items():
            flat = [v for i in members for v in (txs[i].ts_ms, "t:0", first + start + i)]
            reply = store.client.evalsha(
                store._sha["merchant"],
                1,
                store.merchant_key(merchant_id),
                msgpack.packb(flat),
                "0",
                store.ttl_ms,
            )
            out[members, USER.stop :] = np.frombuffer(reply, "<f8").reshape(len(members), -1)
        for user_id, members in by_user.items():
            events = [
                (
                    txs[i].transaction_id,
                    txs[i].ts_ms,
                    txs[i].cents,
                    txs[i].merchant_id,
                    txs[i].country,
                    False if txs[i].lat is None else txs[i].lat,
                    False if txs[i].lon is None else txs[i].lon,
                    txs[i].device,
                )
                for i in members
            ]
            if fmt == "format3":
                args = msgpack.packb([tuple(txs[i]) for i in members])
            else:
                args = msgpack.packb(events)
            reply = store.client.evalsha(sha, 1, store.user_key(user_id), args, "0", store.ttl_ms)
            if fmt == "format3":
                out[members, USER] = np.frombuffer(reply, "<f8").reshape(len(members), -1)
            else:
                out[members, USER] = msgpack.unpackb(reply)
        rows.append(out)
    vectors = np.vstack(rows)
    # The earlier scripts called the device and country of a payment after none in 30 days
    # new; they are unknown now. The states they wrote are the same either way.
    unknown = vectors[:, FEATURE_INDEX["user_txn_count_30d"]] == 0
    for name in ("user_new_device", "user_new_country"):
        vectors[unknown, FEATURE_INDEX[name]] = np.nan
    return vectors


def _formats(store: FeatureStore, stream) -> set[int]:
    """First byte of every user state: 0x95 for format 1 (an array of 5), else the number."""
    keys = {store.user_key(r["user_id"]) for r, _ in stream}
    return {raw[0] for raw in store.client.mget(sorted(keys)) if raw}


@pytest.mark.parametrize(("old", "marker"), [("format1", 0x95), ("format2", 2), ("format3", 3)])
def test_earlier_states_upgrade_with_identical_features(
    store: FeatureStore, old: str, marker: int
) -> None:
    # ~40 days, so day buckets written in the old format expire under format 4.
    stream = random_stream(seed=21, n=2000, users=15, mean_gap_s=1800)
    expected = OfflineFeatureBuilder().transactions(stream)
    half = len(stream) // 2

    sha = str(store.client.script_load((HERE / old / "user.lua").read_text()))
    before = _legacy(store, sha, stream[:half], first=0, batch=61, fmt=old)
    assert _formats(store, stream[:half]) == {marker}

    # Replays of transactions stored in the old format (the tail is still in the 24 h
    # window) get their first vectors back, bit for bit, and change nothing.
    tail = stream[half - 30 : half]
    states = store.client.mget(sorted({store.user_key(r["user_id"]) for r, _ in tail}))
    replayed = _compute(store, tail, first=half - 30, batch=10)
    assert _identical(replayed[:, USER], before[-30:, USER])
    assert store.client.mget(sorted({store.user_key(r["user_id"]) for r, _ in tail})) == states

    after = _compute(store, stream[half:], first=half, batch=61)
    assert _formats(store, stream) == {4}
    got = np.vstack([before, after])
    bad = [FEATURE_NAMES[j] for j in np.where(~_same(got, expected).all(axis=0))[0]]
    assert not bad, f"features differ from offline across the format switch: {bad}"
    assert np.nanmax(got[:, FEATURE_INDEX["user_txn_count_30d"]]) >= 30


def test_format4_long_stream_equals_offline(store: FeatureStore) -> None:
    """Events up to three days out of order (into earlier day buckets) and 30-day expiry,
    format 4 throughout."""
    rng = random.Random(23)
    stream = [
        (record, ts - rng.uniform(0, 3 * 86_400) if rng.random() < 0.15 else ts)
        for record, ts in random_stream(seed=22, n=1500, users=25, mean_gap_s=2400)
    ]
    expected = OfflineFeatureBuilder().transactions(stream)
    got = _compute(store, stream, first=0, batch=37)
    assert _formats(store, stream) == {4}
    assert _same(got, expected).all()
    assert np.nanmax(got[:, FEATURE_INDEX["user_txn_count_7d"]]) >= 5


@pytest.mark.parametrize("big", [False, True])
def test_same_vectors_as_the_format2_script_bit_for_bit(store: FeatureStore, big: bool) -> None:
    """The format-2 script as oracle: out-of-order events and 40 days, bit for bit. With
    (big) amounts near the contract's maximum, squared cents no longer add up exactly in
    doubles (nor did they in any Lua format), so the order of the additions shows in the
    z-score's last bits while those days are in the window, and only there."""
    rng = random.Random(25)
    stream = []
    for i, (record, ts) in enumerate(random_stream(seed=26, n=1500, users=10, mean_gap_s=2400)):
        # In the first ~6 days only: later their day buckets expire, and the exact sums
        # come back.
        if big and i < 200 and rng.random() < 0.5:
            record = {**record, "amount": round(rng.uniform(900_000, 1_000_000), 2)}
        stream.append((record, ts - rng.uniform(0, 3 * 86_400) if rng.random() < 0.15 else ts))
    old = FeatureStore(store.client, key_prefix=f"{store.prefix}-old")
    sha = str(store.client.script_load((HERE / "format2" / "user.lua").read_text()))
    expected = _legacy(old, sha, stream, first=0, batch=37)
    got = _compute(store, stream, first=0, batch=37)
    assert _formats(store, stream) == {4}
    if not big:
        assert _identical(got[:, USER], expected[:, USER])
        return
    zscore = FEATURE_INDEX["user_amount_zscore_30d"]
    others = [j for j in range(USER.start, USER.stop) if j != zscore]
    assert _identical(got[:, others], expected[:, others])
    assert np.allclose(got[:, zscore], expected[:, zscore], rtol=1e-9, equal_nan=True)
    # The inexact case really happened, and then ended: the last rows are exact again.
    offline = OfflineFeatureBuilder().transactions(stream)
    same = np.asarray(_same(got, offline).all(axis=1))
    assert not same[:400].all() and same[-150:].all()
