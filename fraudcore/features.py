"""Feature definitions, and the offline implementation the trainer uses.

The scorer computes the same features online: the user features in a compiled kernel
(scorer/user_kernel.py) over state kept in Redis, the merchant features in Redis
(scorer/lua/merchant.lua); tests feed one stream through both and assert identical
vectors, so any change here must be mirrored there. Everything is point-in-time: a transaction at event time t sees only events that
came before it in its stream *and* have an event time strictly before t, and only labels
whose available_at is at or before t.

Units inside the state: event times in integer milliseconds, amounts in integer cents, so
sums are exact and both implementations do the same floating-point operations.

Windows
- user counts over 1 min, 10 min, 1 h, 24 h and the 24 h amount sum/mean slide exactly:
  events with t - w <= ts < t;
- user 7 d and 30 d windows are calendar-aligned: today's events before t plus the N-1
  previous full UTC days (kept as one bucket a day, so a user costs a few hundred bytes);
- merchant transaction counts over N days are the N full UTC days before the
  transaction's day (so events later today, from other partitions, never leak in);
- merchant fraud counts over a window w count distinct transactions labelled fraud whose
  label became available in (t - w, t].
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
EARTH_RADIUS_KM = 6371.0088
# Implied speed divides by at least a minute: two swipes in the same second are not
# "infinitely fast", they are one minute apart at worst.
MIN_SPEED_INTERVAL_MS = MINUTE_MS
# How long a device/country stays "known" to a user after its last use.
KNOWN_FOR_MS = 30 * DAY_MS
NAN = float("nan")


@dataclass(frozen=True)
class FeatureDef:
    name: str
    description: str
    # Alert reason in plain words; {value} and {usual} are filled in (see reason_text).
    reason: str
    # Which feature (of the same vector) says what is usual for this user, if any;
    # otherwise the training median of this feature is the usual value.
    usual_from: str | None = None
    # Multiplier applied to the usual_from feature (e.g. a 30-day count -> per 10 minutes).
    usual_scale: float = 1.0


_PER_30D = 1 / (30 * 24 * 60)  # one minute as a share of 30 days

FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef(
        "amount",
        "amount of the transaction",
        "amount {value:.2f}; this user's usual is {usual:.2f}",
        "user_amount_mean_30d",
    ),
    FeatureDef(
        "hour_of_day",
        "UTC hour of the event time",
        "made at {value:.0f}h UTC; usual hour is {usual:.0f}h",
    ),
    FeatureDef("is_night", "1 if between 00:00 and 06:00 UTC", "made at night"),
    FeatureDef("is_weekend", "1 on Saturday or Sunday (UTC)", "made on a weekend"),
    FeatureDef(
        "user_txn_count_1m",
        "user's transactions in the previous minute",
        "{value:.0f} transactions in the last minute; this user's usual is {usual:.2f}",
        "user_txn_count_30d",
        _PER_30D,
    ),
    FeatureDef(
        "user_txn_count_10m",
        "user's transactions in the previous 10 minutes",
        "{value:.0f} transactions in the last 10 minutes; this user's usual is {usual:.2f}",
        "user_txn_count_30d",
        10 * _PER_30D,
    ),
    FeatureDef(
        "user_txn_count_1h",
        "user's transactions in the previous hour",
        "{value:.0f} transactions in the last hour; this user's usual is {usual:.2f}",
        "user_txn_count_30d",
        60 * _PER_30D,
    ),
    FeatureDef(
        "user_txn_count_24h",
        "user's transactions in the previous 24 hours",
        "{value:.0f} transactions in the last 24 hours; this user's usual is {usual:.1f}",
        "user_txn_count_30d",
        1440 * _PER_30D,
    ),
    FeatureDef(
        "user_txn_count_7d",
        "user's transactions today and the 6 previous days",
        "{value:.0f} transactions in the last 7 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user_txn_count_30d",
        "user's transactions today and the 29 previous days",
        "{value:.0f} transactions in the last 30 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user_amount_sum_1d",
        "user's amount spent in the previous 24 hours",
        "{value:.2f} spent in the last 24 hours; usual is {usual:.2f}",
    ),
    FeatureDef(
        "user_amount_mean_1d",
        "user's mean amount in the previous 24 hours",
        "mean amount {value:.2f} in the last 24 hours; this user's usual is {usual:.2f}",
        "user_amount_mean_30d",
    ),
    FeatureDef(
        "user_amount_sum_7d",
        "user's amount spent today and the 6 previous days",
        "{value:.2f} spent in the last 7 days; usual is {usual:.2f}",
    ),
    FeatureDef(
        "user_amount_mean_7d",
        "user's mean amount over 7 days",
        "mean amount {value:.2f} over 7 days; this user's usual is {usual:.2f}",
        "user_amount_mean_30d",
    ),
    FeatureDef(
        "user_amount_sum_30d",
        "user's amount spent today and the 29 previous days",
        "{value:.2f} spent in the last 30 days; usual is {usual:.2f}",
    ),
    FeatureDef(
        "user_amount_mean_30d",
        "user's mean amount over 30 days",
        "this user's mean amount over 30 days is {value:.2f}; usual is {usual:.2f}",
    ),
    FeatureDef(
        "user_amount_ratio_30d",
        "amount divided by the user's 30-day mean",
        "amount is {value:.2g}x this user's 30-day mean",
    ),
    FeatureDef(
        "user_amount_zscore_30d",
        "z-score of the amount against the user's 30 days",
        "amount is {value:.1f} standard deviations above this user's 30-day mean",
    ),
    FeatureDef(
        "user_seconds_since_prev",
        "seconds since the user's previous transaction",
        "{value:.0f} s since the previous transaction; usual is {usual:.0f} s",
    ),
    FeatureDef(
        "user_distinct_merchants_24h",
        "distinct merchants of the user in the previous 24 h",
        "{value:.0f} different merchants in 24 hours; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user_distinct_countries_24h",
        "distinct countries of the user in the previous 24 h",
        "{value:.0f} different countries in 24 hours; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user_distance_km_prev",
        "km from the previous transaction's location",
        "{value:.0f} km from the previous transaction; usual is {usual:.0f} km",
    ),
    FeatureDef(
        "user_speed_kmh_prev",
        "implied km/h from the previous transaction",
        "would need {value:.0f} km/h to get here from the previous transaction; "
        "usual is {usual:.0f} km/h",
    ),
    FeatureDef(
        "user_new_device",
        "1 if the device was not used by the user in 30 days (unknown with no payment in 30 days)",
        "first use of this device by this user",
    ),
    FeatureDef(
        "user_new_country",
        "1 if the country was not used by the user in 30 days (unknown with no payment in 30 days)",
        "first transaction of this user in this country",
    ),
    FeatureDef(
        "merchant_txn_count_1d",
        "merchant's transactions on the previous UTC day",
        "merchant had {value:.0f} transactions yesterday; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant_txn_count_7d",
        "merchant's transactions in the 7 previous UTC days",
        "merchant had {value:.0f} transactions in 7 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant_txn_count_30d",
        "merchant's transactions in the 30 previous UTC days",
        "merchant had {value:.0f} transactions in 30 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant_fraud_count_1d",
        "frauds at the merchant reported in the last day",
        "{value:.0f} frauds reported at this merchant in the last day; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant_fraud_count_7d",
        "frauds at the merchant reported in the last 7 days",
        "{value:.0f} frauds reported at this merchant in the last 7 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant_fraud_count_30d",
        "frauds at the merchant reported in the last 30 days",
        "{value:.0f} frauds reported at this merchant in the last 30 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant_fraud_ratio_7d",
        "frauds reported in 7 days per transaction (+1) in 7 days",
        "{value:.3f} frauds reported per transaction at this merchant in 7 days; "
        "usual is {usual:.3f}",
    ),
    FeatureDef(
        "merchant_fraud_ratio_30d",
        "frauds reported in 30 days per transaction (+1) in 30 days",
        "{value:.3f} frauds reported per transaction at this merchant in 30 days; "
        "usual is {usual:.3f}",
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
FEATURE_BY_NAME = {f.name: f for f in FEATURES}
STATELESS_NAMES = FEATURE_NAMES[:4]
USER_NAMES = FEATURE_NAMES[4:25]
MERCHANT_NAMES = FEATURE_NAMES[25:]
# Binary features whose reason needs no number ("first use of this device").
FLAG_FEATURES = frozenset({"is_night", "is_weekend", "user_new_device", "user_new_country"})


class TxnInput(NamedTuple):
    """The fields of a transaction the features use, in state units.

    A named tuple, not a frozen dataclass: the scorer builds one per message and this
    costs about a third as much (construction is a plain tuple.__new__)."""

    transaction_id: str
    user_id: str
    merchant_id: str
    ts_ms: int
    cents: int
    country: str  # "" when unknown
    lat: float | None
    lon: float | None
    device: str  # "" when unknown

    @classmethod
    def from_record(cls, record: dict[str, Any], event_ts: float) -> TxnInput:
        get = record.get
        lat, lon = get("lat"), get("lon")
        if lat is None or lon is None:
            lat = lon = None
        else:
            lat, lon = float(lat), float(lon)
        # tuple.__new__ is what the named tuple's own __new__ calls, minus its Python frame.
        return tuple.__new__(
            cls,
            (
                record["transaction_id"],
                record["user_id"],
                record["merchant_id"],
                round(event_ts * 1000),
                round(record["amount"] * 100),
                get("country") or "",
                lat,
                lon,
                get("device_id") or "",
            ),
        )


def stateless_features(ts_ms: int, cents: int) -> list[float]:
    """amount, hour_of_day, is_night, is_weekend (UTC)."""
    day = ts_ms // DAY_MS
    hour = (ts_ms - day * DAY_MS) // HOUR_MS
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return [cents / 100, float(hour), float(hour < 6), float(weekday >= 5)]


def stateless_matrix(ts_ms: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """`stateless_features` for many transactions at once (int64 arrays in, one row each);
    the same values to the bit (integer arithmetic, and one correctly rounded division)."""
    day = ts_ms // DAY_MS
    hour = (ts_ms - day * DAY_MS) // HOUR_MS
    weekday = (day + 3) % 7
    return np.column_stack((cents / 100, hour.astype(np.float64), hour < 6, weekday >= 5)).astype(
        np.float64
    )


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    # Written operation for operation like the Lua version, so both round alike.
    rad = math.pi / 180
    half_dlat = math.sin((lat2 - lat1) * rad / 2)
    half_dlon = math.sin((lon2 - lon1) * rad / 2)
    a = half_dlat * half_dlat + math.cos(lat1 * rad) * math.cos(lat2 * rad) * half_dlon * half_dlon
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


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
    """Per-user state; mirrors the msgpack table the user script keeps in Redis."""

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
    """The 21 user features of `tx` from `state` (which is not changed)."""
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
    ratio = tx.cents / 100 / mean30 if count30 > 0 and mean30 > 0 else NAN
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
        sum30 / 100, mean30, ratio, zscore, since_prev,
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
    for day in [d for d in state.days if d < today - 31]:
        del state.days[day]
    state.days[today] = state.days.get(today, 0) + 1


def fold_label(state: MerchantState, transaction_id: str, label: str, available_ms: int) -> None:
    """Only fraud labels count; the first one for a transaction wins (sources can repeat)."""
    if label == "fraud" and transaction_id not in state.frauds:
        state.frauds[transaction_id] = available_ms


class OfflineFeatureBuilder:
    """Computes feature vectors from a stream, exactly as the scorer does online.

    Feed transactions in stream order (a file's order, or a topic partition's order).
    Labels may be added at any time, even all up front: each counts only for transactions
    at or after its available_at, so no label leaks into an earlier transaction.
    """

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
        return stateless_features(tx.ts_ms, tx.cents) + user_part + merchant_part

    def transactions(self, stream: Iterable[tuple[dict[str, Any], float]]) -> np.ndarray:
        rows = [self.transaction(record, ts) for record, ts in stream]
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def reason_text(name: str, value: float, usual: float | None) -> str:
    """The plain-words reason for one feature, with its numbers."""
    template = FEATURE_BY_NAME[name].reason
    if "{usual" in template and (usual is None or not math.isfinite(usual)):
        template = template.split(";")[0]
    return template.format(value=value, usual=usual if usual is not None else NAN)
