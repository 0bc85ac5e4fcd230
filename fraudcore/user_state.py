"""The stored user state: its binary layout, its version word and its feature set.

This module is the one place that knows the layout. The kernel (fraudcore/user_kernel.py)
reads and writes it through the constants below, the scorer's feature store checks what
it fetches with `classify`, and tests and operators read a state with `decode`.

Format 5 is a sequence of little-endian 8-byte words, so that the kernel reads a state
with plain array indexing (one int64 and one float64 view of the same memory):

    header    10 words: format (= 5, so the first byte is 0x05), version, feature set,
              last_ts (-1 when none), last_lat, last_lon (NaN when unknown), and the
              counts n_recent, n_days, n_devices, n_countries
    recent    8 + U words an event of the last 24 h, U being the number of user
              features: txid digest (2 words), ts_ms, cents, merchant digest, country
              digest, lat, lon, then the event's U feature values as they were returned
              (a replay gets them back)
    days      4 words a UTC day: day, count, cents sum, cents^2 sum (a double: exact
              below 2^53; it cannot overflow)
    devices   3 words a device: digest, first ts_ms, last ts_ms; then countries alike

`version` grows by one with every write and sits in word 1 in every format since 4; the
compare-and-set (scorer/lua/user_write.lua) refuses a state whose version moved since it
was read, so a fenced zombie can never roll a user back.

`feature set` is `FEATURE_SET_WORD`, a digest of the feature catalogue. A state of
another format or feature set holds replay vectors of another width or meaning, so it is
never read as this one; nor is a corrupt one. The scorer starts such a user afresh, on
purpose, logged and counted by kind (`scorer_user_states_reset_total`), and writes it in
this format under the old version number + 1: the compare-and-set compares bytes 9-16
whatever the format, so it still fences a concurrent writer.

Strings (transaction, merchant, country and device ids) are kept as 64-bit digests
(FNV-1a, then a SplitMix64 finaliser; the transaction id as two independent ones, 128
bits): the empty string is 0 and nothing else is. Two different ids of one user in the
same day would have to collide for a feature to change: about 1 in 10^17 per pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import numpy as np

from fraudcore.features import FEATURE_SET, USER_NAMES

FORMAT = 5
N_USER = len(USER_NAMES)
FEATURE_SET_WORD = int.from_bytes(bytes.fromhex(FEATURE_SET)[:8], "little", signed=True)
HEADER_WORDS = 10
RECENT_FIXED_WORDS = 8
RECENT_WORDS = RECENT_FIXED_WORDS + N_USER
DAY_WORDS = 4
SEEN_WORDS = 3
# Header word indexes.
H_FORMAT, H_VERSION, H_FEATURE_SET = 0, 1, 2
H_LAST_TS, H_LAST_LAT, H_LAST_LON = 3, 4, 5
H_RECENT, H_DAYS, H_DEVICES, H_COUNTRIES = 6, 7, 8, 9
# Where the version word is in a state's bytes (what the compare-and-set compares).
VERSION_BYTES = slice(8 * H_VERSION, 8 * H_VERSION + 8)
# Format 4 was the first with the version word where it is now (and no feature set).
OLDER_FORMATS = frozenset({4})


class StateKind(Enum):
    CURRENT = "current"  # this format and feature set: the kernel reads it
    OTHER_FORMAT = "other_format"  # an older format
    OTHER_FEATURE_SET = "other_feature_set"  # this format, another feature catalogue
    CORRUPT = "corrupt"  # none of these, or its length disagrees with its header


def classify(raw: bytes) -> StateKind:
    """What a stored state is to this scorer."""
    if len(raw) % 8 or len(raw) < 16:
        return StateKind.CORRUPT
    if raw[0] in OLDER_FORMATS:
        return StateKind.OTHER_FORMAT
    if raw[0] != FORMAT or len(raw) < 8 * HEADER_WORDS:
        return StateKind.CORRUPT
    header = np.frombuffer(raw, "<i8", HEADER_WORDS)
    if int(header[H_FORMAT]) != FORMAT:
        return StateKind.CORRUPT
    if int(header[H_FEATURE_SET]) != FEATURE_SET_WORD:
        return StateKind.OTHER_FEATURE_SET
    if min(header[H_RECENT:]) < 0 or len(raw) != 8 * state_words(raw):
        return StateKind.CORRUPT
    return StateKind.CURRENT


def version(raw: bytes) -> int:
    """The version word (0 for a state too short to hold one)."""
    return int.from_bytes(raw[VERSION_BYTES], "little") if len(raw) >= 16 else 0


def fence(raw: bytes | None) -> bytes:
    """What the compare-and-set of a new state compares with the stored one: the bytes
    9-16 of the state it was computed from ("" for none), whatever that state was."""
    return b"" if raw is None else raw[VERSION_BYTES]


def state_words(raw: bytes) -> int:
    """The words a state of this format holds, from its header."""
    header = np.frombuffer(raw, "<i8", HEADER_WORDS)
    return int(
        HEADER_WORDS
        + header[H_RECENT] * RECENT_WORDS
        + header[H_DAYS] * DAY_WORDS
        + (header[H_DEVICES] + header[H_COUNTRIES]) * SEEN_WORDS
    )


def capacity(stored_words: int, users: int, transactions: int) -> int:
    """Words enough for the new states of `users` users holding `stored_words` words
    between them, after `transactions` more events."""
    per_event = RECENT_WORDS + DAY_WORDS + 2 * SEEN_WORDS
    return stored_words + users * HEADER_WORDS + transactions * per_event


class RecentEvent(NamedTuple):
    transaction: tuple[int, int]  # the id's two digests
    ts_ms: int
    cents: int
    merchant: int  # digests
    country: int
    lat: float  # NaN = unknown
    lon: float
    result: tuple[float, ...]  # the user features it got


@dataclass(frozen=True)
class DecodedState:
    """A state's content, digests as stored (for tests and operators)."""

    version: int
    last: tuple[int, float, float] | None  # ts_ms, lat, lon (NaN = unknown)
    recent: list[RecentEvent]
    days: dict[int, tuple[int, int, float]]  # day -> count, cents sum, cents^2 sum
    devices: dict[int, tuple[int, int]]  # digest -> first, last ts_ms
    countries: dict[int, tuple[int, int]]


def decode(raw: bytes) -> DecodedState:
    """A current state's content; raises ValueError naming what is wrong otherwise."""
    kind = classify(raw)
    if kind is not StateKind.CURRENT:
        raise ValueError(
            f"not a format-{FORMAT} state of feature set {FEATURE_SET}: {kind.value} "
            f"(first byte 0x{raw[:1].hex() or '--'}, {len(raw)} bytes)"
        )
    words = np.frombuffer(raw, "<i8")
    floats = words.view(np.float64)
    last_ts = int(words[H_LAST_TS])
    last = None if last_ts < 0 else (last_ts, float(floats[H_LAST_LAT]), float(floats[H_LAST_LON]))
    p = HEADER_WORDS
    recent: list[RecentEvent] = []
    for _ in range(int(words[H_RECENT])):
        ida, idb, ts_ms, cents, merchant, country = (int(w) for w in words[p : p + 6])
        result = tuple(float(v) for v in floats[p + RECENT_FIXED_WORDS : p + RECENT_WORDS])
        recent.append(
            RecentEvent(
                (ida, idb), ts_ms, cents, merchant, country,
                float(floats[p + 6]), float(floats[p + 7]), result,
            )
        )  # fmt: skip
        p += RECENT_WORDS
    days = {}
    for _ in range(int(words[H_DAYS])):
        days[int(words[p])] = (int(words[p + 1]), int(words[p + 2]), float(floats[p + 3]))
        p += DAY_WORDS
    seen: list[dict[int, tuple[int, int]]] = [{}, {}]
    for kind_index, count in enumerate((int(words[H_DEVICES]), int(words[H_COUNTRIES]))):
        for _ in range(count):
            seen[kind_index][int(words[p])] = (int(words[p + 1]), int(words[p + 2]))
            p += SEEN_WORDS
    return DecodedState(version(raw), last, recent, days, seen[0], seen[1])
