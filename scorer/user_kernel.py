"""The 21 user features, computed in the scorer by a compiled kernel, and the user state's
binary storage format 4.

Until format 4 a Lua script computed these inside Redis (50-55 µs of Redis CPU per call,
most of it msgpack decoding and encoding of the state). Now the scorer fetches the
states of a batch's users (a GET each, one round trip), computes every user's features
and new state here in one call of a numba kernel, and writes the changed states back with
a compare-and-set (see scorer/lua/user_write.lua). The arithmetic repeats
fraudcore/features.py (`user_features`, `update_user`) operation for operation; a test
asserts identical vectors, bit for bit.

Format 4 is a sequence of little-endian 8-byte words, so that the kernel reads a state
with plain array indexing (one int64 and one float64 view of the same memory):

    header    9 words: format (= 4, so the first byte is 0x04), version, last_ts (-1 when
              none), last_lat, last_lon (NaN when unknown), and the counts n_recent,
              n_days, n_devices, n_countries
    recent    29 words an event of the last 24 h: txid digest (2 words), ts_ms, cents,
              merchant digest, country digest, lat, lon, then the event's 21 feature
              values as they were returned (a replay gets them back)
    days      4 words a UTC day: day, count, cents sum, cents^2 sum (a double: exact
              below 2^53, as the Lua script's were; it cannot overflow)
    devices   3 words a device: digest, first ts_ms, last ts_ms; then countries alike

`version` grows by one with every write; the compare-and-set refuses a state whose
version moved since it was read, so a fenced zombie can never roll a user back.

Strings (transaction, merchant, country and device ids) are kept as 64-bit digests
(FNV-1a, then a SplitMix64 finaliser; the transaction id as two independent ones, 128
bits): the empty string is 0 and nothing else is. Two different ids of one user in the
same day would have to collide for a feature to change: about 1 in 10^17 per pair.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Sequence

import numba
import numpy as np

from fraudcore.features import (
    DAY_MS,
    HOUR_MS,
    KNOWN_FOR_MS,
    MIN_SPEED_INTERVAL_MS,
    MINUTE_MS,
    USER_NAMES,
    TxnInput,
    UserState,
    haversine_km,
)

FORMAT = 4
N_USER = len(USER_NAMES)  # 21
HEADER_WORDS = 9
RECENT_WORDS = 8 + N_USER
DAY_WORDS = 4
SEEN_WORDS = 3
# Header word indexes.
_H_FORMAT, _H_VERSION, _H_LAST_TS, _H_LAST_LAT, _H_LAST_LON = 0, 1, 2, 3, 4
_H_RECENT, _H_DAYS, _H_DEVICES, _H_COUNTRIES = 5, 6, 7, 8
# Where the version word is in a state's bytes (what the compare-and-set compares).
VERSION_BYTES = slice(8 * _H_VERSION, 8 * _H_VERSION + 8)

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_OFFSET_B = np.uint64(0x84222325CBF29CE4)
_FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True)
def _mix(h: np.uint64) -> np.uint64:
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


@numba.njit(cache=True, nogil=True)
def _digest(data: np.ndarray, start: int, end: int, basis: np.uint64) -> np.int64:
    if end == start:
        return np.int64(0)
    h = basis
    for i in range(start, end):
        h ^= np.uint64(data[i])
        h *= _FNV_PRIME
    h = _mix(h)
    if h == np.uint64(0):
        h = np.uint64(1)
    return np.int64(h)  # the bits, read as signed


@numba.njit(cache=True, nogil=True)
def _digest_all(data: np.ndarray, ends: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Digests of the strings concatenated in `data` (string i ends at ends[i]); a second,
    independent one where second[i] (for transaction ids): out has 2 columns."""
    n = ends.shape[0]
    out = np.zeros((n, 2), dtype=np.int64)
    start = 0
    for i in range(n):
        end = ends[i]
        out[i, 0] = _digest(data, start, end, _FNV_OFFSET)
        if second[i]:
            out[i, 1] = _digest(data, start, end, _FNV_OFFSET_B)
        start = end
    return out


# The offline function itself, compiled: the same operations in the same order.
_haversine = numba.njit(cache=True, nogil=True)(haversine_km)


@numba.njit(cache=True, nogil=True)
def _distinct(values: np.ndarray, n: int) -> int:
    if n == 0:
        return 0
    ordered = np.sort(values[:n])
    count = 1
    for i in range(1, n):
        if ordered[i] != ordered[i - 1]:
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _seen_first(keys: np.ndarray, firsts: np.ndarray, n: int, key: np.int64) -> np.int64:
    for j in range(n):
        if keys[j] == key:
            return firsts[j]
    return np.int64(-1)


@numba.njit(cache=True, nogil=True)
def _remember(
    keys: np.ndarray, firsts: np.ndarray, lasts: np.ndarray, n: int, key: np.int64, t: np.int64
) -> int:
    """Drops what was unused for KNOWN_FOR_MS before t (order kept), then records key."""
    kept = 0
    for j in range(n):
        if lasts[j] >= t - KNOWN_FOR_MS:
            keys[kept], firsts[kept], lasts[kept] = keys[j], firsts[j], lasts[j]
            kept += 1
    if key == 0:
        return kept
    for j in range(kept):
        if keys[j] == key:
            firsts[j] = min(firsts[j], t)
            lasts[j] = max(lasts[j], t)
            return kept
    keys[kept], firsts[kept], lasts[kept] = key, t, t
    return kept + 1


@numba.njit(cache=True, nogil=True)
def _mean(total: float, count: float) -> float:
    return total / count / 100 if count > 0 else math.nan


@numba.njit(cache=True, nogil=True)
def run_users(
    words: np.ndarray,  # int64 view of every fetched state, concatenated
    fwords: np.ndarray,  # float64 view of the same memory
    user_start: np.ndarray,  # per user: word offset of its state in `words`, -1 = none
    user_tx: np.ndarray,  # per user + 1: where its rows start in `rows`
    rows: np.ndarray,  # transaction rows grouped by user, in stream order
    ids: np.ndarray,  # per transaction: txid digest (2), merchant, country, device
    ts: np.ndarray,
    cents: np.ndarray,
    lat: np.ndarray,  # NaN = unknown
    lon: np.ndarray,
    readonly: bool,
    out: np.ndarray,  # (transactions, 21) user features
    new_words: np.ndarray,  # int64 output arena: the changed states, format 4
    new_fwords: np.ndarray,
    new_start: np.ndarray,  # per user: word offset of its new state, -1 = unchanged
    new_len: np.ndarray,
) -> int:
    """Every user's features (into `out`) and changed state (into the arena); returns the
    words of the arena used."""
    n_users = user_start.shape[0]
    # Scratch sized for the largest user of the batch.
    cap_recent = 1
    cap_days = 1
    cap_seen = 1
    for u in range(n_users):
        extra = user_tx[u + 1] - user_tx[u]
        s = user_start[u]
        nr = words[s + _H_RECENT] if s >= 0 else 0
        nd = words[s + _H_DAYS] if s >= 0 else 0
        ns = max(words[s + _H_DEVICES], words[s + _H_COUNTRIES]) if s >= 0 else 0
        cap_recent = max(cap_recent, nr + extra)
        cap_days = max(cap_days, nd + extra)
        cap_seen = max(cap_seen, ns + extra)
    r_ida = np.empty(cap_recent, np.int64)
    r_idb = np.empty(cap_recent, np.int64)
    r_ts = np.empty(cap_recent, np.int64)
    r_cents = np.empty(cap_recent, np.int64)
    r_merchant = np.empty(cap_recent, np.int64)
    r_country = np.empty(cap_recent, np.int64)
    r_lat = np.empty(cap_recent, np.float64)
    r_lon = np.empty(cap_recent, np.float64)
    r_result = np.empty((cap_recent, N_USER), np.float64)
    d_day = np.empty(cap_days, np.int64)
    d_count = np.empty(cap_days, np.int64)
    d_sum = np.empty(cap_days, np.int64)
    d_sq = np.empty(cap_days, np.float64)
    dv_key = np.empty(cap_seen, np.int64)
    dv_first = np.empty(cap_seen, np.int64)
    dv_last = np.empty(cap_seen, np.int64)
    co_key = np.empty(cap_seen, np.int64)
    co_first = np.empty(cap_seen, np.int64)
    co_last = np.empty(cap_seen, np.int64)
    merchants = np.empty(cap_recent, np.int64)
    countries = np.empty(cap_recent, np.int64)
    vector = np.empty(N_USER, np.float64)

    used = 0
    for u in range(n_users):
        # ---- load
        s = user_start[u]
        version = np.int64(0)
        last_ts = np.int64(-1)
        last_lat = math.nan
        last_lon = math.nan
        nr = nd = ndv = nco = 0
        if s >= 0:
            version = words[s + _H_VERSION]
            last_ts = words[s + _H_LAST_TS]
            last_lat = fwords[s + _H_LAST_LAT]
            last_lon = fwords[s + _H_LAST_LON]
            nr = words[s + _H_RECENT]
            nd = words[s + _H_DAYS]
            ndv = words[s + _H_DEVICES]
            nco = words[s + _H_COUNTRIES]
            p = s + HEADER_WORDS
            for j in range(nr):
                r_ida[j], r_idb[j] = words[p], words[p + 1]
                r_ts[j], r_cents[j] = words[p + 2], words[p + 3]
                r_merchant[j], r_country[j] = words[p + 4], words[p + 5]
                r_lat[j], r_lon[j] = fwords[p + 6], fwords[p + 7]
                for k in range(N_USER):
                    r_result[j, k] = fwords[p + 8 + k]
                p += RECENT_WORDS
            for j in range(nd):
                d_day[j], d_count[j], d_sum[j] = words[p], words[p + 1], words[p + 2]
                d_sq[j] = fwords[p + 3]
                p += DAY_WORDS
            for j in range(ndv):
                dv_key[j], dv_first[j], dv_last[j] = words[p], words[p + 1], words[p + 2]
                p += SEEN_WORDS
            for j in range(nco):
                co_key[j], co_first[j], co_last[j] = words[p], words[p + 1], words[p + 2]
                p += SEEN_WORDS

        changed = False
        for q in range(user_tx[u], user_tx[u + 1]):
            i = rows[q]
            ida, idb = ids[i, 0], ids[i, 1]
            merchant, country, device = ids[i, 2], ids[i, 3], ids[i, 4]
            t = ts[i]
            c = cents[i]
            # ---- replay: what the first pass returned, nothing changes
            replay = -1
            for j in range(nr):
                if r_ida[j] == ida and r_idb[j] == idb:
                    replay = j
                    break
            if replay >= 0:
                for k in range(N_USER):
                    out[i, k] = r_result[replay, k]
                continue
            # ---- features (fraudcore.features.user_features)
            today = t // DAY_MS
            c1m = c10m = c1h = c24h = 0
            sum24h = 0
            today_count = today_sum = 0
            today_sq = 0.0
            n_merchants = n_countries = 0
            prev_ts = np.int64(-1)
            prev_lat = math.nan
            prev_lon = math.nan
            for j in range(nr):
                age = t - r_ts[j]
                if age <= 0:
                    continue
                if age <= DAY_MS:
                    c24h += 1
                    sum24h += r_cents[j]
                    merchants[n_merchants] = r_merchant[j]
                    n_merchants += 1
                    if r_country[j] != 0:
                        countries[n_countries] = r_country[j]
                        n_countries += 1
                    if age <= HOUR_MS:
                        c1h += 1
                        if age <= 10 * MINUTE_MS:
                            c10m += 1
                            if age <= MINUTE_MS:
                                c1m += 1
                if r_ts[j] // DAY_MS == today:
                    today_count += 1
                    today_sum += r_cents[j]
                    today_sq += float(r_cents[j] * r_cents[j])
                if r_ts[j] >= prev_ts:
                    prev_ts, prev_lat, prev_lon = r_ts[j], r_lat[j], r_lon[j]
            if last_ts >= 0 and prev_ts < last_ts and last_ts < t:
                prev_ts, prev_lat, prev_lon = last_ts, last_lat, last_lon

            count7 = sum7 = 0
            count30, sum30, sq30 = today_count, today_sum, today_sq
            for j in range(nd):
                day = d_day[j]
                if today - 29 <= day < today:
                    count30 += d_count[j]
                    sum30 += d_sum[j]
                    sq30 += d_sq[j]
                    if day >= today - 6:
                        count7 += d_count[j]
                        sum7 += d_sum[j]
            count7 += today_count
            sum7 += today_sum

            mean30 = _mean(sum30, count30)
            ratio = c / 100 / mean30 if count30 > 0 and mean30 > 0 else math.nan
            zscore = math.nan
            if count30 >= 2:
                mean_c = sum30 / count30
                variance = sq30 / count30 - mean_c * mean_c
                if variance > 0:
                    zscore = (c - mean_c) / math.sqrt(variance)

            since_prev = distance = speed = math.nan
            if prev_ts >= 0:
                since_prev = (t - prev_ts) / 1000
                if not (
                    math.isnan(lat[i])
                    or math.isnan(lon[i])
                    or math.isnan(prev_lat)
                    or math.isnan(prev_lon)
                ):
                    distance = _haversine(prev_lat, prev_lon, lat[i], lon[i])
                    speed = distance / (max(t - prev_ts, MIN_SPEED_INTERVAL_MS) / HOUR_MS)

            new_device = math.nan
            if device != 0 and count30 > 0:
                first = _seen_first(dv_key, dv_first, ndv, device)
                new_device = 0.0 if first >= 0 and first < t else 1.0
            new_country = math.nan
            if country != 0 and count30 > 0:
                first = _seen_first(co_key, co_first, nco, country)
                new_country = 0.0 if first >= 0 and first < t else 1.0

            vector[0], vector[1], vector[2], vector[3] = c1m, c10m, c1h, c24h
            vector[4], vector[5] = count7, count30
            vector[6], vector[7] = sum24h / 100, _mean(sum24h, c24h)
            vector[8], vector[9] = sum7 / 100, _mean(sum7, count7)
            vector[10], vector[11], vector[12], vector[13] = sum30 / 100, mean30, ratio, zscore
            vector[14] = since_prev
            vector[15] = _distinct(merchants, n_merchants)
            vector[16] = _distinct(countries, n_countries)
            vector[17], vector[18] = distance, speed
            vector[19], vector[20] = new_device, new_country
            for k in range(N_USER):
                out[i, k] = vector[k]
            if readonly:
                continue

            # ---- fold it in (fraudcore.features.update_user)
            changed = True
            kept = 0
            for j in range(nr):
                if r_ts[j] >= t - DAY_MS:
                    if kept != j:
                        r_ida[kept], r_idb[kept], r_ts[kept] = r_ida[j], r_idb[j], r_ts[j]
                        r_cents[kept], r_merchant[kept] = r_cents[j], r_merchant[j]
                        r_country[kept], r_lat[kept], r_lon[kept] = r_country[j], r_lat[j], r_lon[j]
                        for k in range(N_USER):
                            r_result[kept, k] = r_result[j, k]
                    kept += 1
            nr = kept
            r_ida[nr], r_idb[nr], r_ts[nr], r_cents[nr] = ida, idb, t, c
            r_merchant[nr], r_country[nr], r_lat[nr], r_lon[nr] = merchant, country, lat[i], lon[i]
            for k in range(N_USER):
                r_result[nr, k] = vector[k]
            nr += 1

            kept = 0
            bucket = -1
            for j in range(nd):
                if d_day[j] >= today - 30:
                    d_day[kept], d_count[kept] = d_day[j], d_count[j]
                    d_sum[kept], d_sq[kept] = d_sum[j], d_sq[j]
                    if d_day[kept] == today:
                        bucket = kept
                    kept += 1
            nd = kept
            if bucket < 0:
                bucket = nd
                d_day[nd], d_count[nd], d_sum[nd], d_sq[nd] = today, 0, 0, 0.0
                nd += 1
            d_count[bucket] += 1
            d_sum[bucket] += c
            d_sq[bucket] += float(c * c)

            if last_ts < 0 or t >= last_ts:
                last_ts, last_lat, last_lon = t, lat[i], lon[i]
            ndv = _remember(dv_key, dv_first, dv_last, ndv, device, t)
            nco = _remember(co_key, co_first, co_last, nco, country, t)

        if not changed:
            new_start[u] = -1
            new_len[u] = 0
            continue
        # ---- store
        p = used
        new_start[u] = p
        new_words[p + _H_FORMAT] = FORMAT
        new_words[p + _H_VERSION] = version + 1
        new_words[p + _H_LAST_TS] = last_ts
        new_fwords[p + _H_LAST_LAT] = last_lat
        new_fwords[p + _H_LAST_LON] = last_lon
        new_words[p + _H_RECENT] = nr
        new_words[p + _H_DAYS] = nd
        new_words[p + _H_DEVICES] = ndv
        new_words[p + _H_COUNTRIES] = nco
        p += HEADER_WORDS
        for j in range(nr):
            new_words[p], new_words[p + 1] = r_ida[j], r_idb[j]
            new_words[p + 2], new_words[p + 3] = r_ts[j], r_cents[j]
            new_words[p + 4], new_words[p + 5] = r_merchant[j], r_country[j]
            new_fwords[p + 6], new_fwords[p + 7] = r_lat[j], r_lon[j]
            for k in range(N_USER):
                new_fwords[p + 8 + k] = r_result[j, k]
            p += RECENT_WORDS
        for j in range(nd):
            new_words[p], new_words[p + 1], new_words[p + 2] = d_day[j], d_count[j], d_sum[j]
            new_fwords[p + 3] = d_sq[j]
            p += DAY_WORDS
        for j in range(ndv):
            new_words[p], new_words[p + 1], new_words[p + 2] = dv_key[j], dv_first[j], dv_last[j]
            p += SEEN_WORDS
        for j in range(nco):
            new_words[p], new_words[p + 1], new_words[p + 2] = co_key[j], co_first[j], co_last[j]
            p += SEEN_WORDS
        new_len[u] = p - used
        used = p
    return used


def state_words(raw: bytes) -> int:
    """The words a format-4 state holds (its length check)."""
    header = np.frombuffer(raw, "<i8", HEADER_WORDS)
    return int(
        HEADER_WORDS
        + header[_H_RECENT] * RECENT_WORDS
        + header[_H_DAYS] * DAY_WORDS
        + (header[_H_DEVICES] + header[_H_COUNTRIES]) * SEEN_WORDS
    )


def digests(strings: Sequence[str], second: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) int64: each string's digest, and the second one where `second` is set."""
    encoded = [s.encode() for s in strings]
    ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))
    data = np.frombuffer(b"".join(encoded), np.uint8)
    if second is None:
        second = np.zeros(len(encoded), np.bool_)
    return _digest_all(data, ends, second)


def transaction_ids(txs: Sequence[TxnInput]) -> np.ndarray:
    """(n, 5) int64 per transaction: txid digest (2 words), merchant, country, device."""
    n = len(txs)
    strings: list[str] = []
    for tx in txs:
        strings += (tx.transaction_id, tx.merchant_id, tx.country, tx.device)
    second = np.zeros(4 * n, np.bool_)
    second[0::4] = True
    d = digests(strings, second).reshape(n, 4, 2)
    ids = np.empty((n, 5), np.int64)
    ids[:, 0] = d[:, 0, 0]
    ids[:, 1] = d[:, 0, 1]
    ids[:, 2] = d[:, 1, 0]
    ids[:, 3] = d[:, 2, 0]
    ids[:, 4] = d[:, 3, 0]
    return ids


def encode_state(state: UserState, version: int = 0) -> bytes:
    """A UserState (e.g. read from an earlier format) in format 4."""
    nan = math.nan
    recent = state.recent
    rows = [e.transaction_id for e in recent]
    txid = digests(rows, np.ones(len(rows), np.bool_))
    strings = digests(
        [e.merchant_id for e in recent]
        + [e.country for e in recent]
        + list(state.devices)
        + list(state.countries)
    )[:, 0]
    n = len(recent)
    merchant, country = strings[:n], strings[n : 2 * n]
    device_keys = strings[2 * n : 2 * n + len(state.devices)]
    country_keys = strings[2 * n + len(state.devices) :]
    last_ts, last_lat, last_lon = state.last if state.last is not None else (-1, None, None)
    words: list[float | int] = [
        FORMAT, version, last_ts,
        nan if last_lat is None else last_lat, nan if last_lon is None else last_lon,
        n, len(state.days), len(state.devices), len(state.countries),
    ]  # fmt: skip
    kinds = "qqqddqqqq"
    for j, e in enumerate(recent):
        words += [int(txid[j, 0]), int(txid[j, 1]), e.ts_ms, e.cents]
        words += [int(merchant[j]), int(country[j])]
        words += [nan if e.lat is None else e.lat, nan if e.lon is None else e.lon]
        words += [float(v) for v in e.result]
        kinds += "qqqqqqdd" + "d" * N_USER
    for day, (count, total, sq) in state.days.items():
        words += [day, count, total, float(sq)]
        kinds += "qqqd"
    for keys, seen in ((device_keys, state.devices), (country_keys, state.countries)):
        for key, (first, last) in zip(keys, seen.values(), strict=True):
            words += [int(key), first, last]
            kinds += "qqq"
    return struct.pack("<" + kinds, *words)


def warm_up() -> float:
    """Compile the kernel (or load it from numba's cache) now, on a one-transaction batch,
    rather than in the first real batch: compiling takes ~12 s on this project's machine.
    Returns the seconds it took."""
    started = time.perf_counter()
    tx = TxnInput("warm-up", "warm-up", "warm-up", DAY_MS, 100, "FR", 0.0, 0.0, "warm-up")
    n_words = HEADER_WORDS + RECENT_WORDS + DAY_WORDS + 2 * SEEN_WORDS
    words = np.frombuffer(b"", "<i8")  # read-only, as FeatureStore passes the states
    new_words = np.empty(n_words, np.int64)
    run_users(
        words, words.view(np.float64), np.array([-1]), np.array([0, 1]), np.array([0]),
        transaction_ids([tx]), np.array([tx.ts_ms]), np.array([tx.cents]),
        np.array([0.0]), np.array([0.0]), False,
        np.empty((1, N_USER)), new_words, new_words.view(np.float64),
        np.empty(1, np.int64), np.empty(1, np.int64),
    )  # fmt: skip
    return time.perf_counter() - started
