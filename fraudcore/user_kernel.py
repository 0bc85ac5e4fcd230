"""The user features' arithmetic: a compiled kernel over the stored user states.

This is the one implementation: the scorer runs it on each batch's users, with their
states fetched from Redis (scorer/feature_store.py), and the trainer's offline build runs
it over states kept in memory (fraudcore/offline.py). The state's layout is
fraudcore/user_state.py's. Which column each value goes to comes from the catalogue
(`USER_NAMES`): the kernel's outputs are named in `OUTPUTS`, and every user feature of the
catalogue must be one of them.

A call takes a batch: every user's state (or none), the user's transactions in stream
order, and computes, transaction by transaction, the features from the state and then
folds the transaction in. A transaction id already in the user's last 24 h is a replay:
it gets the vector it got the first time, and changes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

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
    haversine_km,
)
from fraudcore.user_state import (
    DAY_WORDS,
    FEATURE_SET_WORD,
    FORMAT,
    H_COUNTRIES,
    H_DAYS,
    H_DEVICES,
    H_FEATURE_SET,
    H_FORMAT,
    H_LAST_LAT,
    H_LAST_LON,
    H_LAST_TS,
    H_RECENT,
    H_VERSION,
    HEADER_WORDS,
    RECENT_FIXED_WORDS,
    SEEN_WORDS,
    StateKind,
    capacity,
    classify,
)

# What the kernel computes, in the order of its value array; the catalogue decides which
# of them are features and where they go.
OUTPUTS = (
    "user_txn_count_1m", "user_txn_count_10m", "user_txn_count_1h", "user_txn_count_24h",
    "user_txn_count_7d", "user_txn_count_30d", "user_amount_sum_1d", "user_amount_mean_1d",
    "user_amount_sum_7d", "user_amount_mean_7d", "user_amount_sum_30d",
    "user_amount_mean_30d", "user_amount_zscore_30d", "user_seconds_since_prev",
    "user_distinct_merchants_24h", "user_distinct_countries_24h", "user_distance_km_prev",
    "user_speed_kmh_prev", "user_new_device", "user_new_country",
)  # fmt: skip
_missing = sorted(set(USER_NAMES) - set(OUTPUTS))
if _missing:
    raise ImportError(f"user features with no arithmetic in fraudcore/user_kernel.py: {_missing}")
# Per output: its column in the user block (the catalogue's USER_NAMES order), -1 = unused.
SLOTS = np.array([USER_NAMES.index(n) if n in USER_NAMES else -1 for n in OUTPUTS], np.int64)
N_OUTPUTS = len(OUTPUTS)

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
    user_version: np.ndarray,  # per user: the version its new state follows
    user_tx: np.ndarray,  # per user + 1: where its rows start in `rows`
    rows: np.ndarray,  # transaction rows grouped by user, in stream order
    ids: np.ndarray,  # per transaction: txid digest (2), merchant, country, device
    ts: np.ndarray,
    cents: np.ndarray,
    lat: np.ndarray,  # NaN = unknown
    lon: np.ndarray,
    readonly: bool,
    slots: np.ndarray,  # SLOTS
    feature_set: np.int64,  # FEATURE_SET_WORD, written into every new state
    out: np.ndarray,  # (transactions, user features)
    replayed: np.ndarray,  # (transactions,) bool: a replay, nothing folded in
    new_words: np.ndarray,  # int64 output arena: the changed states
    new_fwords: np.ndarray,
    new_start: np.ndarray,  # per user: word offset of its new state, -1 = unchanged
    new_len: np.ndarray,
) -> int:
    """Every user's features (into `out`) and changed state (into the arena); returns the
    words of the arena used."""
    n_user = out.shape[1]
    recent_words = RECENT_FIXED_WORDS + n_user
    n_users = user_start.shape[0]
    # Scratch sized for the largest user of the batch.
    cap_recent = 1
    cap_days = 1
    cap_seen = 1
    for u in range(n_users):
        extra = user_tx[u + 1] - user_tx[u]
        s = user_start[u]
        nr = words[s + H_RECENT] if s >= 0 else 0
        nd = words[s + H_DAYS] if s >= 0 else 0
        ns = max(words[s + H_DEVICES], words[s + H_COUNTRIES]) if s >= 0 else 0
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
    r_result = np.empty((cap_recent, n_user), np.float64)
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
    values = np.empty(N_OUTPUTS, np.float64)
    vector = np.empty(n_user, np.float64)

    used = 0
    for u in range(n_users):
        # ---- load
        s = user_start[u]
        version = user_version[u]
        last_ts = np.int64(-1)
        last_lat = math.nan
        last_lon = math.nan
        nr = nd = ndv = nco = 0
        if s >= 0:
            last_ts = words[s + H_LAST_TS]
            last_lat = fwords[s + H_LAST_LAT]
            last_lon = fwords[s + H_LAST_LON]
            nr = words[s + H_RECENT]
            nd = words[s + H_DAYS]
            ndv = words[s + H_DEVICES]
            nco = words[s + H_COUNTRIES]
            p = s + HEADER_WORDS
            for j in range(nr):
                r_ida[j], r_idb[j] = words[p], words[p + 1]
                r_ts[j], r_cents[j] = words[p + 2], words[p + 3]
                r_merchant[j], r_country[j] = words[p + 4], words[p + 5]
                r_lat[j], r_lon[j] = fwords[p + 6], fwords[p + 7]
                for k in range(n_user):
                    r_result[j, k] = fwords[p + RECENT_FIXED_WORDS + k]
                p += recent_words
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
                for k in range(n_user):
                    out[i, k] = r_result[replay, k]
                replayed[i] = True
                continue
            replayed[i] = False
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

            # In OUTPUTS order.
            values[0], values[1], values[2], values[3] = c1m, c10m, c1h, c24h
            values[4], values[5] = count7, count30
            values[6], values[7] = sum24h / 100, _mean(sum24h, c24h)
            values[8], values[9] = sum7 / 100, _mean(sum7, count7)
            values[10], values[11], values[12] = sum30 / 100, mean30, zscore
            values[13] = since_prev
            values[14] = _distinct(merchants, n_merchants)
            values[15] = _distinct(countries, n_countries)
            values[16], values[17] = distance, speed
            values[18], values[19] = new_device, new_country
            for k in range(N_OUTPUTS):
                if slots[k] >= 0:
                    vector[slots[k]] = values[k]
            for k in range(n_user):
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
                        for k in range(n_user):
                            r_result[kept, k] = r_result[j, k]
                    kept += 1
            nr = kept
            r_ida[nr], r_idb[nr], r_ts[nr], r_cents[nr] = ida, idb, t, c
            r_merchant[nr], r_country[nr], r_lat[nr], r_lon[nr] = merchant, country, lat[i], lon[i]
            for k in range(n_user):
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
        new_words[p + H_FORMAT] = FORMAT
        new_words[p + H_VERSION] = version + 1
        new_words[p + H_FEATURE_SET] = feature_set
        new_words[p + H_LAST_TS] = last_ts
        new_fwords[p + H_LAST_LAT] = last_lat
        new_fwords[p + H_LAST_LON] = last_lon
        new_words[p + H_RECENT] = nr
        new_words[p + H_DAYS] = nd
        new_words[p + H_DEVICES] = ndv
        new_words[p + H_COUNTRIES] = nco
        p += HEADER_WORDS
        for j in range(nr):
            new_words[p], new_words[p + 1] = r_ida[j], r_idb[j]
            new_words[p + 2], new_words[p + 3] = r_ts[j], r_cents[j]
            new_words[p + 4], new_words[p + 5] = r_merchant[j], r_country[j]
            new_fwords[p + 6], new_fwords[p + 7] = r_lat[j], r_lon[j]
            for k in range(n_user):
                new_fwords[p + RECENT_FIXED_WORDS + k] = r_result[j, k]
            p += recent_words
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


@dataclass(frozen=True)
class UserResult:
    features: np.ndarray  # (transactions, user features), in the batch's order
    replayed: np.ndarray  # (transactions,) bool: a replay of an earlier transaction
    states: list[bytes | None]  # per user: its new state, None = unchanged


def compute_users(
    txs: Sequence[TxnInput],
    user_rows: np.ndarray,
    user_tx: np.ndarray,
    states: Sequence[bytes | None],
    versions: Sequence[int],
    *,
    readonly: bool = False,
) -> UserResult:
    """The user features of a batch and the users' new states.

    User u's transactions are txs[user_rows[user_tx[u]:user_tx[u + 1]]], in stream order;
    states[u] is its stored state (current format and feature set) or None, and its new
    state gets version versions[u] + 1."""
    n, n_users = len(txs), len(states)
    starts = np.full(n_users, -1, np.int64)
    at = 0
    for u, state in enumerate(states):
        if state is not None:
            starts[u] = at
            at += len(state) >> 3
    # Read-only (a view of the bytes), also when empty: one compiled signature.
    words = np.frombuffer(b"".join(s for s in states if s is not None), "<i8")
    lat = np.fromiter((math.nan if tx.lat is None else tx.lat for tx in txs), np.float64, n)
    lon = np.fromiter((math.nan if tx.lon is None else tx.lon for tx in txs), np.float64, n)
    new_words = np.empty(capacity(words.shape[0], n_users, n), np.int64)
    new_start = np.empty(n_users, np.int64)
    new_len = np.empty(n_users, np.int64)
    features = np.empty((n, len(USER_NAMES)), np.float64)
    replayed = np.empty(n, np.bool_)
    run_users(
        words, words.view(np.float64), starts, np.asarray(versions, np.int64), user_tx,
        user_rows, transaction_ids(txs),
        np.fromiter((tx.ts_ms for tx in txs), np.int64, n),
        np.fromiter((tx.cents for tx in txs), np.int64, n),
        lat, lon, readonly, SLOTS, np.int64(FEATURE_SET_WORD),
        features, replayed, new_words, new_words.view(np.float64), new_start, new_len,
    )  # fmt: skip
    arena = new_words.tobytes()
    new_states: list[bytes | None] = [
        None if start < 0 else arena[8 * start : 8 * (start + length)]
        for start, length in zip(new_start.tolist(), new_len.tolist(), strict=True)
    ]
    return UserResult(features, replayed, new_states)


def group_rows(keys: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The distinct keys in first-seen order, the rows grouped by key (stream order kept
    within a key), and where each key's rows start: compute_users' user_rows and user_tx."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        rows = groups.get(key)
        if rows is None:
            groups[key] = [i]
        else:
            rows.append(i)
    counts = np.fromiter(map(len, groups.values()), np.int64, len(groups))
    flat = np.fromiter(chain.from_iterable(groups.values()), np.intp, len(keys))
    return list(groups), flat, np.concatenate(([0], np.cumsum(counts)))


def warm_up() -> float:
    """Compile the kernel (or load it from numba's cache) now, on a one-transaction batch,
    rather than in the first real batch: compiling takes ~12 s on this project's machine.
    Also checks what it wrote against fraudcore/user_state.py: numba's cache follows this
    file only, so after an edit of the layout alone it would run stale code.
    Returns the seconds it took."""
    started = time.perf_counter()
    tx = TxnInput("warm-up", "warm-up", "warm-up", DAY_MS, 100, "FR", 0.0, 0.0, "warm-up")
    result = compute_users([tx], np.array([0], np.intp), np.array([0, 1]), [None], [0])
    state = result.states[0]
    if state is None or classify(state) is not StateKind.CURRENT or state[0] != FORMAT:
        raise RuntimeError(
            "the compiled user kernel disagrees with fraudcore/user_state.py; remove the "
            "numba cache (fraudcore/__pycache__/user_kernel.*.nbi/.nbc) and start again"
        )
    return time.perf_counter() - started
