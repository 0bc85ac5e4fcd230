"""The feature catalogue: every feature's name, source, meaning and alert reason, in the
order of the feature vector, and the feature set's digests.

A feature's arithmetic is written once and run by the trainer's offline build
(fraudcore/offline.py), the scorer and its POST /score alike: event features here
(`event_columns`), user features in fraudcore/user_kernel.py, merchant features in
fraudcore/merchant.py, derived features as the `derive` formula of their entry. Every
position in a vector comes from this catalogue. Everything is point-in-time: a
transaction at event time t sees only events that came before it in its stream *and*
have an event time strictly before t, and only labels whose available_at is at or before
t. tests/fraudcore/reference_features.py computes them in plain Python, one transaction
at a time, as the oracle.

Units inside the state: event times in integer milliseconds, amounts in integer cents, so
sums are exact.

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

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

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


Source = Literal["event", "user", "merchant", "derived"]
Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class FeatureDef:
    # Where the value comes from: the transaction alone (stateless_columns), the card's
    # history (fraudcore/user_kernel.py), the merchant's (fraudcore/merchant.py), or a
    # formula over features before it in the catalogue (`derive`).
    source: Source
    name: str
    description: str
    # Alert reason in plain words; {value} and {usual} are filled in (see reason_text).
    reason: str
    # Which feature (of the same vector) says what is usual for this user, if any;
    # otherwise the training median of this feature is the usual value.
    usual_from: str | None = None
    # Multiplier applied to the usual_from feature (e.g. a 30-day count -> per 10 minutes).
    usual_scale: float = 1.0
    # For source "derived": the column from the columns of the features before it (all
    # rows at once), run by every path that builds vectors (offline and online alike).
    derive: Callable[[Columns], np.ndarray] | None = None


_PER_30D = 1 / (30 * 24 * 60)  # one minute as a share of 30 days

FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef(
        "event",
        "amount",
        "amount of the transaction",
        "amount {value:.2f}; this user's usual is {usual:.2f}",
        "user_amount_mean_30d",
    ),
    FeatureDef(
        "event",
        "hour_of_day",
        "UTC hour of the event time",
        "made at {value:.0f}h UTC; usual hour is {usual:.0f}h",
    ),
    FeatureDef("event", "is_night", "1 if between 00:00 and 06:00 UTC", "made at night"),
    FeatureDef("event", "is_weekend", "1 on Saturday or Sunday (UTC)", "made on a weekend"),
    FeatureDef(
        "user",
        "user_txn_count_1m",
        "user's transactions in the previous minute",
        "{value:.0f} transactions in the last minute; this user's usual is {usual:.2f}",
        "user_txn_count_30d",
        _PER_30D,
    ),
    FeatureDef(
        "user",
        "user_txn_count_10m",
        "user's transactions in the previous 10 minutes",
        "{value:.0f} transactions in the last 10 minutes; this user's usual is {usual:.2f}",
        "user_txn_count_30d",
        10 * _PER_30D,
    ),
    FeatureDef(
        "user",
        "user_txn_count_1h",
        "user's transactions in the previous hour",
        "{value:.0f} transactions in the last hour; this user's usual is {usual:.2f}",
        "user_txn_count_30d",
        60 * _PER_30D,
    ),
    FeatureDef(
        "user",
        "user_txn_count_24h",
        "user's transactions in the previous 24 hours",
        "{value:.0f} transactions in the last 24 hours; this user's usual is {usual:.1f}",
        "user_txn_count_30d",
        1440 * _PER_30D,
    ),
    FeatureDef(
        "user",
        "user_txn_count_7d",
        "user's transactions today and the 6 previous days",
        "{value:.0f} transactions in the last 7 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user",
        "user_txn_count_30d",
        "user's transactions today and the 29 previous days",
        "{value:.0f} transactions in the last 30 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user",
        "user_amount_sum_1d",
        "user's amount spent in the previous 24 hours",
        "{value:.2f} spent in the last 24 hours; usual is {usual:.2f}",
    ),
    FeatureDef(
        "user",
        "user_amount_mean_1d",
        "user's mean amount in the previous 24 hours",
        "mean amount {value:.2f} in the last 24 hours; this user's usual is {usual:.2f}",
        "user_amount_mean_30d",
    ),
    FeatureDef(
        "user",
        "user_amount_sum_7d",
        "user's amount spent today and the 6 previous days",
        "{value:.2f} spent in the last 7 days; usual is {usual:.2f}",
    ),
    FeatureDef(
        "user",
        "user_amount_mean_7d",
        "user's mean amount over 7 days",
        "mean amount {value:.2f} over 7 days; this user's usual is {usual:.2f}",
        "user_amount_mean_30d",
    ),
    FeatureDef(
        "user",
        "user_amount_sum_30d",
        "user's amount spent today and the 29 previous days",
        "{value:.2f} spent in the last 30 days; usual is {usual:.2f}",
    ),
    FeatureDef(
        "user",
        "user_amount_mean_30d",
        "user's mean amount over 30 days",
        "this user's mean amount over 30 days is {value:.2f}; usual is {usual:.2f}",
    ),
    FeatureDef(
        "derived",
        "user_amount_ratio_30d",
        "amount divided by the user's 30-day mean",
        "amount is {value:.2g}x this user's 30-day mean",
        derive=lambda c: ratio(c["amount"], c["user_amount_mean_30d"]),
    ),
    FeatureDef(
        "user",
        "user_amount_zscore_30d",
        "z-score of the amount against the user's 30 days",
        "amount is {value:.1f} standard deviations above this user's 30-day mean",
    ),
    FeatureDef(
        "user",
        "user_seconds_since_prev",
        "seconds since the user's previous transaction",
        "{value:.0f} s since the previous transaction; usual is {usual:.0f} s",
    ),
    FeatureDef(
        "user",
        "user_distinct_merchants_24h",
        "distinct merchants of the user in the previous 24 h",
        "{value:.0f} different merchants in 24 hours; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user",
        "user_distinct_countries_24h",
        "distinct countries of the user in the previous 24 h",
        "{value:.0f} different countries in 24 hours; usual is {usual:.0f}",
    ),
    FeatureDef(
        "user",
        "user_distance_km_prev",
        "km from the previous transaction's location",
        "{value:.0f} km from the previous transaction; usual is {usual:.0f} km",
    ),
    FeatureDef(
        "user",
        "user_speed_kmh_prev",
        "implied km/h from the previous transaction",
        "would need {value:.0f} km/h to get here from the previous transaction; "
        "usual is {usual:.0f} km/h",
    ),
    FeatureDef(
        "user",
        "user_new_device",
        "1 if the device was not used by the user in 30 days (unknown with no payment in 30 days)",
        "first use of this device by this user",
    ),
    FeatureDef(
        "user",
        "user_new_country",
        "1 if the country was not used by the user in 30 days (unknown with no payment in 30 days)",
        "first transaction of this user in this country",
    ),
    FeatureDef(
        "merchant",
        "merchant_txn_count_1d",
        "merchant's transactions on the previous UTC day",
        "merchant had {value:.0f} transactions yesterday; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant",
        "merchant_txn_count_7d",
        "merchant's transactions in the 7 previous UTC days",
        "merchant had {value:.0f} transactions in 7 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant",
        "merchant_txn_count_30d",
        "merchant's transactions in the 30 previous UTC days",
        "merchant had {value:.0f} transactions in 30 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant",
        "merchant_fraud_count_1d",
        "frauds at the merchant reported in the last day",
        "{value:.0f} frauds reported at this merchant in the last day; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant",
        "merchant_fraud_count_7d",
        "frauds at the merchant reported in the last 7 days",
        "{value:.0f} frauds reported at this merchant in the last 7 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant",
        "merchant_fraud_count_30d",
        "frauds at the merchant reported in the last 30 days",
        "{value:.0f} frauds reported at this merchant in the last 30 days; usual is {usual:.0f}",
    ),
    FeatureDef(
        "merchant",
        "merchant_fraud_ratio_7d",
        "frauds reported in 7 days per transaction (+1) in 7 days",
        "{value:.3f} frauds reported per transaction at this merchant in 7 days; "
        "usual is {usual:.3f}",
    ),
    FeatureDef(
        "merchant",
        "merchant_fraud_ratio_30d",
        "frauds reported in 30 days per transaction (+1) in 30 days",
        "{value:.3f} frauds reported per transaction at this merchant in 30 days; "
        "usual is {usual:.3f}",
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
FEATURE_BY_NAME = {f.name: f for f in FEATURES}


def _of(source: Source) -> tuple[str, ...]:
    return tuple(f.name for f in FEATURES if f.source == source)


EVENT_NAMES = _of("event")
USER_NAMES = _of("user")
MERCHANT_NAMES = _of("merchant")
DERIVED = tuple(f for f in FEATURES if f.source == "derived")
# Each source's columns in the feature vector, in its own order.
EVENT_COLUMNS = np.array([FEATURE_INDEX[n] for n in EVENT_NAMES], np.intp)
USER_COLUMNS = np.array([FEATURE_INDEX[n] for n in USER_NAMES], np.intp)
MERCHANT_COLUMNS = np.array([FEATURE_INDEX[n] for n in MERCHANT_NAMES], np.intp)
# Bump when a feature's arithmetic changes under the same name: models and stored user
# states are tied to the digest below, and it must change with what they hold.
ARITHMETIC_REVISION = 1
# What a model is trained on: every feature, in order.
FEATURE_SET = hashlib.sha256(
    "\n".join([str(ARITHMETIC_REVISION), *FEATURE_NAMES]).encode()
).hexdigest()[:16]
# What a stored user state holds (its replay vectors): the user features, in order.
USER_FEATURE_SET = hashlib.sha256(
    "\n".join([str(ARITHMETIC_REVISION), *USER_NAMES]).encode()
).hexdigest()[:16]


def derive_columns(out: np.ndarray) -> None:
    """Fill the derived columns of a feature matrix whose other columns are filled."""
    if not DERIVED:
        return
    columns = {name: out[:, i] for i, name in enumerate(FEATURE_NAMES)}
    for feature in DERIVED:
        assert feature.derive is not None
        out[:, FEATURE_INDEX[feature.name]] = feature.derive(columns)
        columns[feature.name] = out[:, FEATURE_INDEX[feature.name]]


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where the denominator is above 0, else NaN (unknown)."""
    result = np.full(numerator.shape, NAN)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result


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


def event_columns(ts_ms: np.ndarray, cents: np.ndarray) -> dict[str, np.ndarray]:
    """The event features of many transactions (int64 arrays in), by name: integer
    arithmetic, and one correctly rounded division."""
    day = ts_ms // DAY_MS
    hour = (ts_ms - day * DAY_MS) // HOUR_MS
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return {
        "amount": cents / 100,
        "hour_of_day": hour.astype(np.float64),
        "is_night": (hour < 6).astype(np.float64),
        "is_weekend": (weekday >= 5).astype(np.float64),
    }


def fill_event_columns(out: np.ndarray, ts_ms: np.ndarray, cents: np.ndarray) -> None:
    values = event_columns(ts_ms, cents)
    for name, column in zip(EVENT_NAMES, EVENT_COLUMNS, strict=True):
        out[:, column] = values[name]


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    # Written operation for operation like the Lua version, so both round alike.
    rad = math.pi / 180
    half_dlat = math.sin((lat2 - lat1) * rad / 2)
    half_dlon = math.sin((lon2 - lon1) * rad / 2)
    a = half_dlat * half_dlat + math.cos(lat1 * rad) * math.cos(lat2 * rad) * half_dlon * half_dlon
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def reason_text(name: str, value: float, usual: float | None) -> str:
    """The plain-words reason for one feature, with its numbers."""
    template = FEATURE_BY_NAME[name].reason
    if "{usual" in template and (usual is None or not math.isfinite(usual)):
        template = template.split(";")[0]
    return template.format(value=value, usual=usual if usual is not None else NAN)
