"""The reader of the user states the Lua scripts left in Redis (scorer/user_state.py).

Each frozen writer (tests/scorer/format{1,2,3}/user.lua) folds a stream into real Redis,
the offline builder folds the same stream; every user's stored state, decoded, must then
give the offline features bit for bit: for the user's next transactions (a later part of
the stream) and for replays of the transactions it remembers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from fraudcore.features import (
    OfflineFeatureBuilder,
    TxnInput,
    UserState,
    _Recent,
    user_features,
)
from scorer.feature_store import FeatureStore
from scorer.user_state import decode_legacy
from tests.scorer.streams import random_stream

HERE = Path(__file__).parent
Stream = list[tuple[dict[str, Any], float]]
# First byte of the states each writer leaves: format 1 is one msgpack array of 5.
FIRST_BYTE = {"format1": 0x95, "format2": 2, "format3": 3}
PROBES_PER_USER = 20


def _args(fmt: str, txs: list[TxnInput]) -> bytes:
    """ARGV[1] of a writer: the format-3 script takes TxnInput tuples as they are (lat/lon
    nil when unknown); the earlier ones {txid, ts, cents, merchant, country, lat|false,
    lon|false, device}."""
    if fmt == "format3":
        return msgpack.packb([tuple(tx) for tx in txs])
    return msgpack.packb(
        [
            (
                tx.transaction_id,
                tx.ts_ms,
                tx.cents,
                tx.merchant_id,
                tx.country,
                False if tx.lat is None else tx.lat,
                False if tx.lon is None else tx.lon,
                tx.device,
            )
            for tx in txs
        ]
    )


def _feed(store: FeatureStore, fmt: str, sha: str, stream: Stream, batch: int) -> None:
    """Fold `stream` into the user states through the writer of `fmt`, a call per user
    and batch, as the scorer did."""
    for start in range(0, len(stream), batch):
        by_user: dict[str, list[TxnInput]] = {}
        for record, ts in stream[start : start + batch]:
            tx = TxnInput.from_record(record, ts)
            by_user.setdefault(tx.user_id, []).append(tx)
        for user_id, txs in by_user.items():
            store.client.evalsha(
                sha, 1, store.user_key(user_id), _args(fmt, txs), "0", store.ttl_ms
            )


def _load(store: FeatureStore, fmt: str) -> str:
    return str(store.client.script_load((HERE / fmt / "user.lua").read_text()))


def _bits(values: list[float]) -> bytes:
    return np.array(values, dtype=np.float64).tobytes()


def _events(state: UserState) -> list[tuple[Any, ...]]:
    return [
        (
            e.transaction_id,
            e.ts_ms,
            e.cents,
            e.merchant_id,
            e.country,
            e.lat,
            e.lon,
            _bits(e.result),
        )
        for e in state.recent
    ]


def _assert_same_state(got: UserState, expected: UserState) -> None:
    """Field by field where the Lua and offline states hold the same thing; the order of
    days and of devices/countries is not kept by the Lua states and means nothing."""
    assert _events(got) == _events(expected)
    assert got.days == expected.days
    assert all(type(v) is int for bucket in got.days.values() for v in bucket)
    assert got.last == expected.last
    assert got.devices == expected.devices
    assert got.countries == expected.countries


def _shuffled_stream(seed: int, n: int, users: int) -> Stream:
    """~40 days (day buckets and devices expire), 15% of events up to three days late
    (into day buckets already closed), on top of the stream's own 10% slightly late."""
    rng = random.Random(seed)
    return [
        (record, ts - rng.uniform(0, 3 * 86_400) if rng.random() < 0.15 else ts)
        for record, ts in random_stream(seed=seed, n=n, users=users, mean_gap_s=2400)
    ]


def _check_users(store: FeatureStore, builder: OfflineFeatureBuilder, later: Stream) -> int:
    """Decode every user's state and compare with the offline one; returns the number of
    probes compared."""
    upcoming: dict[str, list[TxnInput]] = {}
    for record, ts in later:
        upcoming.setdefault(record["user_id"], []).append(TxnInput.from_record(record, ts))
    compared = 0
    for user_id, offline in builder.users.items():
        raw = store.client.get(store.user_key(user_id))
        assert isinstance(raw, bytes)
        decoded = decode_legacy(raw)
        _assert_same_state(decoded, offline)
        probes = upcoming.get(user_id, [])[:PROBES_PER_USER]
        # Replays: a remembered txid, at another time and amount, still gets its first vector.
        probes += [
            TxnInput(e.transaction_id, user_id, "m-replay", e.ts_ms + 5, 1, "", None, None, "")
            for e in offline.recent
        ]
        for probe in probes:
            got, expected = user_features(decoded, probe), user_features(offline, probe)
            assert _bits(got) == _bits(expected), (user_id, probe)
            compared += 1
    return compared


@pytest.mark.parametrize("fmt", ["format1", "format2", "format3"])
def test_decoded_states_give_the_offline_features_bit_for_bit(
    store: FeatureStore, fmt: str
) -> None:
    stream = _shuffled_stream(seed=31, n=1500, users=12)
    sha = _load(store, fmt)
    builder = OfflineFeatureBuilder()
    fed = 0
    compared = 0
    # Checked at several points: early states (few days, no expiry) and late ones.
    for cut in (150, 700, 1300):
        _feed(store, fmt, sha, stream[fed:cut], batch=37)
        builder.transactions(stream[fed:cut])
        fed = cut
        keys = sorted(store.user_key(user_id) for user_id in builder.users)
        assert {raw[0] for raw in store.client.mget(keys) if raw} == {FIRST_BYTE[fmt]}
        compared += _check_users(store, builder, stream[cut:])
    # The states were not trivial: windows, expiry, replays and missing values all showed.
    assert compared > 700
    late = builder.users.values()
    assert max(len(state.days) for state in late) >= 25
    assert any(e.lat is None for state in late for e in state.recent)
    assert any(np.isnan(e.result).any() for state in late for e in state.recent)


@pytest.mark.parametrize("fmt", ["format1", "format2", "format3"])
def test_a_state_without_optional_fields(store: FeatureStore, fmt: str) -> None:
    """No location, country or device: Lua stored false, and empty tables (which cmsgpack
    packs as empty arrays, also where a map was meant)."""
    record = {"transaction_id": "tx-1", "user_id": "u-bare", "merchant_id": "m-1", "amount": 12.5}
    stream = [(record, 1_780_000_000.0)]
    _feed(store, fmt, _load(store, fmt), stream, batch=1)
    builder = OfflineFeatureBuilder()
    builder.transactions(stream)
    raw = store.client.get(store.user_key("u-bare"))
    assert isinstance(raw, bytes)
    decoded = decode_legacy(raw)
    _assert_same_state(decoded, builder.users["u-bare"])
    assert decoded.last == (1_780_000_000_000, None, None)
    assert decoded.devices == {} and decoded.countries == {}


def _concat(*values: Any) -> bytes:
    """A state as the Lua scripts of formats 2 and 3 wrote it: msgpack values back to back."""
    return b"".join(msgpack.packb(v) for v in values)


_EMPTY3: tuple[Any, ...] = (3, [], b"", 0, 0, 0, False, 0, 0, 0, False, False, False, [], [])
_VECTOR = b"\0" * 8 * 21
_EVENT = [b"tx", 1, 2, b"m", b"", False, False]


def test_empty_states_are_the_empty_state() -> None:
    assert decode_legacy(_concat(*_EMPTY3)) == UserState.empty()
    assert decode_legacy(_concat(2, *_EMPTY3[1:3], *_EMPTY3[6:])) == UserState.empty()
    assert decode_legacy(msgpack.packb([[], [], False, [], []])) == UserState.empty()
    one = _concat(3, [*_EVENT, _VECTOR], *_EMPTY3[2:])
    assert decode_legacy(one).recent == [_Recent("tx", 1, 2, "m", "", None, None, [0.0] * 21)]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "empty"),
        (b"\x07\x01\x02", "unknown format byte 0x07"),
        (b"\x94\x90\x90\xc2\x90", "unknown format byte 0x94"),  # an array of 4
        (_concat(*_EMPTY3)[:-1], r"format 3\): 14 whole msgpack values"),
        (_concat(*_EMPTY3) + b"\xc0", r"format 3\): 16 whole msgpack values"),
        (_concat(*_EMPTY3[:12]), r"format 3\): 12 whole msgpack values"),
        (_concat(2, *_EMPTY3[1:3], *_EMPTY3[7:]), r"format 2\): 11 whole msgpack values"),
        (_concat(3, [], b"\0" * 23, *_EMPTY3[3:]), "23 bytes"),
        (_concat(3, _EVENT, *_EMPTY3[2:]), "8 values per event"),
        (_concat(3, [*_EVENT, b"\0" * 8], *_EMPTY3[2:]), "unpack requires"),
        (_concat(3, [], b"", 0, 0, 0, 20000, 1, 2.5, 3, *_EMPTY3[10:]), "integral"),
        (_concat(*_EMPTY3[:13], [b"d1", 1], []), "triples"),
        (msgpack.packb([1, 2, 3, 4, 5]), "format 1"),
        (msgpack.packb([[[b"tx", 1]], [], False, [], []]), "array of 8"),
        (msgpack.packb([[], {1: [1, 2]}, False, [], []]), "array of 3"),
        (b"\x95\xc1\x90\x90\x90\x90", "format 1"),  # 0xc1: never used by msgpack
    ],
)
def test_unreadable_states_raise_value_error(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_legacy(raw)
