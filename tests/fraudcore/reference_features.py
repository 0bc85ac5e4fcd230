"""The features in plain Python, one transaction at a time: the oracle that the engine
(fraudcore/user_kernel.py, fraudcore/merchant.py, driven by fraudcore/offline.py and by the
scorer's feature store) must equal bit for bit. Written for reading, not for speed.

Everything is point-in-time: a transaction at event time t sees only events that came
before it in its stream *and* have an event time strictly before t, and only labels whose
available_at is at or before t. Units: event times in integer milliseconds, amounts in
integer cents, so sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudcore import merchant as merchant_kernel
from fraudcore import user_kernel
from fraudcore.features import (
    DAY_MS,
    EVENT_COLUMNS,
    FEATURE_NAMES,
    HOUR_MS,
    KNOWN_FOR_MS,
    MERCHANT_COLUMNS,
    MERCHANT_NAMES,
    MIN_SPEED_INTERVAL_MS,
    MINUTE_MS,
    NAN,
    USER_COLUMNS,
    USER_NAMES,
    TxnInput,
    derive_columns,
    haversine_km,
)
from fraudcore.merchant import KEEP_DAYS

# The orders user_features and merchant_features return their values in: the kernels'.
REFERENCE_USER_NAMES = user_kernel.OUTPUTS
REFERENCE_MERCHANT_NAMES = merchant_kernel.OUTPUTS


def event_features(ts_ms: int, cents: int) -> list[float]:
    """amount, hour_of_day, is_night, is_weekend (UTC)."""
    day = ts_ms // DAY_MS
    hour = (ts_ms - day * DAY_MS) // HOUR_MS
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return [cents / 100, float(hour), float(hour < 6), float(weekday >= 5)]


@dataclass
class _Recent:
    transaction_id: str
    ts_ms: int
    cents: int
    merchant_id: str
    country: str
    lat: float | None
    lon: float | None
    result: list[float]


@dataclass
class UserState:
    """Per-user state, as plain Python values."""

    recent: list[_Recent]
    days: dict[int, list[int]]  # day -> [count, cents sum, cents^2 sum]
    last: tuple[int, float | None, float | None] | None  # ts_ms, lat, lon of the latest
    devices: dict[str, list[int]]  # device -> [first ts_ms, last ts_ms]
    countries: dict[str, list[int]]

    @classmethod
    def empty(cls) -> UserState:
        return cls([], {}, None, {}, {})


def _mean(total: float, count: float) -> float:
    return total / count / 100 if count > 0 else NAN


def user_features(state: UserState, tx: TxnInput) -> list[float]:
    """The user features of `tx` from `state` (which is not changed), in
    REFERENCE_USER_NAMES order."""
    for entry in state.recent:
        if entry.transaction_id == tx.transaction_id:
            return list(entry.result)  # a replay gets what the first pass got
    t = tx.ts_ms
    today = t // DAY_MS
    c1m = c10m = c1h = c24h = 0
    sum24h = 0
    today_count = today_sum = today_sq = 0
    merchants: set[str] = set()
    countries: set[str] = set()
    prev_ts = -1
    prev_lat: float | None = None
    prev_lon: float | None = None
    for entry in state.recent:
        age = t - entry.ts_ms
        if age <= 0:
            continue
        if age <= DAY_MS:
            c24h += 1
            sum24h += entry.cents
            merchants.add(entry.merchant_id)
            if entry.country:
                countries.add(entry.country)
            if age <= HOUR_MS:
                c1h += 1
                if age <= 10 * MINUTE_MS:
                    c10m += 1
                    if age <= MINUTE_MS:
                        c1m += 1
        if entry.ts_ms // DAY_MS == today:
            today_count += 1
            today_sum += entry.cents
            today_sq += entry.cents * entry.cents
        if entry.ts_ms >= prev_ts:
            prev_ts, prev_lat, prev_lon = entry.ts_ms, entry.lat, entry.lon
    if state.last is not None and prev_ts < state.last[0] < t:
        prev_ts, prev_lat, prev_lon = state.last

    count7 = sum7 = 0
    count30, sum30, sq30 = today_count, today_sum, today_sq
    for day in range(today - 29, today):
        bucket = state.days.get(day)
        if bucket is None:
            continue
        count30 += bucket[0]
        sum30 += bucket[1]
        sq30 += bucket[2]
        if day >= today - 6:
            count7 += bucket[0]
            sum7 += bucket[1]
    count7 += today_count
    sum7 += today_sum

    mean30 = _mean(sum30, count30)
    zscore = NAN
    if count30 >= 2:
        mean_c = sum30 / count30
        variance = sq30 / count30 - mean_c * mean_c
        if variance > 0:
            zscore = (tx.cents - mean_c) / math.sqrt(variance)

    since_prev = distance = speed = NAN
    if prev_ts >= 0:
        since_prev = (t - prev_ts) / 1000
        if (
            tx.lat is not None
            and tx.lon is not None
            and prev_lat is not None
            and prev_lon is not None
        ):
            distance = haversine_km(prev_lat, prev_lon, tx.lat, tx.lon)
            speed = distance / (max(t - prev_ts, MIN_SPEED_INTERVAL_MS) / HOUR_MS)

    # Without a payment in 30 days there is nothing to be new against: a first payment
    # is not a new device and country, and the model learns a new card's risk from
    # user_txn_count_30d = 0 instead.
    new_device = NAN
    if tx.device and count30 > 0:
        seen = state.devices.get(tx.device)
        new_device = 0.0 if seen is not None and seen[0] < t else 1.0
    new_country = NAN
    if tx.country and count30 > 0:
        seen = state.countries.get(tx.country)
        new_country = 0.0 if seen is not None and seen[0] < t else 1.0

    return [
        float(c1m), float(c10m), float(c1h), float(c24h), float(count7), float(count30),
        sum24h / 100, _mean(sum24h, c24h), sum7 / 100, _mean(sum7, count7),
        sum30 / 100, mean30, zscore, since_prev,
        float(len(merchants)), float(len(countries)), distance, speed, new_device, new_country,
    ]  # fmt: skip


def _remember(seen: dict[str, list[int]], key: str, t: int) -> None:
    if not key:
        return
    span = seen.get(key)
    if span is None:
        seen[key] = [t, t]
    else:
        span[0] = min(span[0], t)
        span[1] = max(span[1], t)


def update_user(state: UserState, tx: TxnInput, result: list[float]) -> None:
    """Fold `tx` into `state` (a replayed transaction_id must not reach here)."""
    t = tx.ts_ms
    state.recent = [e for e in state.recent if e.ts_ms >= t - DAY_MS]
    state.recent.append(
        _Recent(tx.transaction_id, t, tx.cents, tx.merchant_id, tx.country, tx.lat, tx.lon, result)
    )
    today = t // DAY_MS
    for day in [d for d in state.days if d < today - 30]:
        del state.days[day]
    bucket = state.days.setdefault(today, [0, 0, 0])
    bucket[0] += 1
    bucket[1] += tx.cents
    bucket[2] += tx.cents * tx.cents
    if state.last is None or t >= state.last[0]:
        state.last = (t, tx.lat, tx.lon)
    for seen, key in ((state.devices, tx.device), (state.countries, tx.country)):
        for stale in [k for k, span in seen.items() if span[1] < t - KNOWN_FOR_MS]:
            del seen[stale]
        _remember(seen, key, t)


@dataclass
class MerchantState:
    days: dict[int, int]  # day -> transactions
    frauds: dict[str, int]  # transaction_id -> available_at ms (first fraud label wins)

    @classmethod
    def empty(cls) -> MerchantState:
        return cls({}, {})


def merchant_features(state: MerchantState, ts_ms: int) -> list[float]:
    """The 8 merchant features at event time ts_ms."""
    today = ts_ms // DAY_MS
    c1 = state.days.get(today - 1, 0)
    c7 = sum(state.days.get(d, 0) for d in range(today - 7, today))
    c30 = sum(state.days.get(d, 0) for d in range(today - 30, today))
    f1 = f7 = f30 = 0
    for available in state.frauds.values():
        age = ts_ms - available
        if 0 <= age < 30 * DAY_MS:
            f30 += 1
            if age < 7 * DAY_MS:
                f7 += 1
                if age < DAY_MS:
                    f1 += 1
    return [
        float(c1), float(c7), float(c30), float(f1), float(f7), float(f30),
        f7 / (c7 + 1), f30 / (c30 + 1),
    ]  # fmt: skip


def update_merchant(state: MerchantState, ts_ms: int) -> None:
    today = ts_ms // DAY_MS
    for day in [d for d in state.days if d < today - KEEP_DAYS]:
        del state.days[day]
    state.days[today] = state.days.get(today, 0) + 1


def fold_label(state: MerchantState, transaction_id: str, label: str, available_ms: int) -> None:
    """Only fraud labels count; the first one for a transaction wins (sources can repeat)."""
    if label == "fraud" and transaction_id not in state.frauds:
        state.frauds[transaction_id] = available_ms


class ReferenceBuilder:
    """One transaction at a time, in plain Python: the vectors the engine must give."""

    def __init__(self) -> None:
        self.users: dict[str, UserState] = {}
        self.merchants: dict[str, MerchantState] = {}

    def add_label(
        self, merchant_id: str, transaction_id: str, label: str, available_ts: float
    ) -> None:
        state = self.merchants.setdefault(merchant_id, MerchantState.empty())
        fold_label(state, transaction_id, label, round(available_ts * 1000))

    def add_labels(self, labels: Iterable[tuple[str, str, str, float]]) -> None:
        for merchant_id, transaction_id, label, available_ts in labels:
            self.add_label(merchant_id, transaction_id, label, available_ts)

    def transaction(self, record: dict[str, Any], event_ts: float) -> list[float]:
        """The full feature vector (FEATURE_NAMES order; NaN = missing) and fold it in."""
        tx = TxnInput.from_record(record, event_ts)
        user = self.users.setdefault(tx.user_id, UserState.empty())
        replay = any(e.transaction_id == tx.transaction_id for e in user.recent)
        user_part = user_features(user, tx)
        merchant = self.merchants.setdefault(tx.merchant_id, MerchantState.empty())
        merchant_part = merchant_features(merchant, tx.ts_ms)
        if not replay:
            update_user(user, tx, user_part)
            update_merchant(merchant, tx.ts_ms)
        vector = np.full(len(FEATURE_NAMES), np.nan)
        vector[EVENT_COLUMNS] = event_features(tx.ts_ms, tx.cents)
        vector[USER_COLUMNS] = [user_part[REFERENCE_USER_NAMES.index(n)] for n in USER_NAMES]
        vector[MERCHANT_COLUMNS] = [
            merchant_part[REFERENCE_MERCHANT_NAMES.index(n)] for n in MERCHANT_NAMES
        ]
        derive_columns(vector.reshape(1, -1))
        return list(vector)

    def transactions(self, stream: Any) -> np.ndarray:
        rows = [self.transaction(record, ts) for record, ts in stream]
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
