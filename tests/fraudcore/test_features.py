"""The features on hand-made cases, and the engine against the plain-Python reference on
random streams (offline build, no services)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fraudcore.features import EVENT_COLUMNS, FEATURE_INDEX, FEATURE_NAMES, haversine_km
from fraudcore.offline import OfflineFeatureBuilder
from tests.fraudcore.reference_features import ReferenceBuilder, event_features
from tests.scorer.streams import random_stream

DAY = 86_400.0
T0 = 1_780_000_000.0 // DAY * DAY + 12 * 3600  # noon UTC


def tx(i: int, ts: float, amount: float = 10.0, **extra: object) -> tuple[dict, float]:
    record = {"transaction_id": f"t{i}", "user_id": "u", "merchant_id": "m", "amount": amount}
    record.update(extra)
    return record, ts


def features(stream: list[tuple[dict, float]]) -> list[dict[str, float]]:
    rows = OfflineFeatureBuilder().transactions(stream)
    return [{name: row[i] for name, i in FEATURE_INDEX.items()} for row in rows]


def test_velocity_windows_count_only_strictly_earlier_events() -> None:
    stream = [tx(i, T0 + 20 * i) for i in range(5)] + [tx(99, T0 + 20 * 4)]  # same second
    last = features(stream)[-1]
    assert last["user_txn_count_1m"] == 3  # t-60..t: events at -60, -40, -20; not the tie
    assert last["user_txn_count_10m"] == 4
    assert last["user_seconds_since_prev"] == 20


def test_out_of_order_event_does_not_see_the_future() -> None:
    stream = [tx(1, T0), tx(2, T0 + 600), tx(3, T0 + 300)]
    late = features(stream)[-1]
    assert late["user_txn_count_1h"] == 1  # only the event at T0
    assert late["user_seconds_since_prev"] == 300


def test_day_windows_are_calendar_aligned() -> None:
    stream = [tx(1, T0 - 6 * DAY), tx(2, T0 - 7 * DAY), tx(3, T0 - 29 * DAY), tx(4, T0 - 30 * DAY)]
    stream.append(tx(5, T0, amount=50.0))
    last = features(stream)[-1]
    assert last["user_txn_count_7d"] == 1
    assert last["user_txn_count_30d"] == 3
    assert math.isclose(last["user_amount_mean_30d"], 10.0)
    assert math.isclose(last["user_amount_ratio_30d"], 5.0)


def test_impossible_travel_and_new_device() -> None:
    paris, new_york = (48.8566, 2.3522), (40.7128, -74.0060)
    stream = [
        tx(1, T0, lat=paris[0], lon=paris[1], device_id="phone", country="FR"),
        tx(2, T0 + 1800, lat=new_york[0], lon=new_york[1], device_id="laptop", country="US"),
    ]
    second = features(stream)[-1]
    distance = haversine_km(*paris, *new_york)
    assert 5800 < distance < 5900
    assert second["user_distance_km_prev"] == distance
    assert math.isclose(second["user_speed_kmh_prev"], distance * 2)
    assert second["user_new_device"] == 1 and second["user_new_country"] == 1
    # A first payment has nothing to be new against: its device and country are unknown,
    # not new, and so are those of a card back after 30 days without a payment.
    first = features(stream[:1])[0]
    assert math.isnan(first["user_new_device"]) and math.isnan(first["user_new_country"])
    back = features([*stream, tx(3, T0 + 31 * 86400, device_id="tablet", country="DE")])[-1]
    assert back["user_txn_count_30d"] == 0
    assert math.isnan(back["user_new_device"]) and math.isnan(back["user_new_country"])


def test_missing_optional_fields_are_missing_not_zero() -> None:
    only = features([tx(1, T0)])[0]
    for name in (
        "user_distance_km_prev",
        "user_new_device",
        "user_new_country",
        "user_amount_mean_30d",
    ):
        assert np.isnan(only[name]), name
    assert only["user_txn_count_24h"] == 0


def test_merchant_windows_are_previous_full_days_and_labels_point_in_time() -> None:
    builder = OfflineFeatureBuilder()
    builder.add_label("m", "t1", "fraud", T0 + 2 * DAY)  # known two days later
    rows = builder.transactions([tx(1, T0), tx(2, T0 + 60), tx(3, T0 + DAY), tx(4, T0 + 2 * DAY)])
    i_count, i_fraud = (
        FEATURE_INDEX["merchant_txn_count_1d"],
        FEATURE_INDEX["merchant_fraud_count_7d"],
    )
    assert rows[1, i_count] == 0  # same day: not counted yet
    assert rows[2, i_count] == 2
    assert rows[2, i_fraud] == 0  # the label is not available yet
    assert rows[3, i_fraud] == 1


def test_event_features_equal_the_reference() -> None:
    rng = np.random.default_rng(4)
    ts_ms = rng.integers(946_684_800_000, 4_102_444_800_000, 20_000)  # 2000 .. 2100
    ts_ms[:48] = 1_780_000_000_000 // 86_400_000 * 86_400_000 + np.arange(48) * 1_800_000
    cents = rng.integers(0, 10**11, 20_000)
    cents[:5] = [0, 1, 99, 100, 2**53 - 1]
    stream = [
        ({"transaction_id": f"t{i}", "user_id": f"u{i}", "merchant_id": "m", "amount": c / 100},
         t / 1000)
        for i, (t, c) in enumerate(zip(ts_ms.tolist(), cents.tolist(), strict=True))
    ]  # fmt: skip
    got = OfflineFeatureBuilder().transactions(stream)[:, EVENT_COLUMNS]
    expected = np.array([event_features(int(t), int(c)) for t, c in zip(ts_ms, cents, strict=True)])
    assert np.array_equal(got, expected)
    assert set(got[:48, 1]) == set(range(24))  # every hour of a day was exercised


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, signs of zero included; NaN ("missing") is one value."""
    canonical = [np.where(np.isnan(x), np.nan, x) for x in (a, b)]
    return a.shape == b.shape and canonical[0].tobytes() == canonical[1].tobytes()


@pytest.mark.parametrize("chunk", [1, 37, 10_000])
def test_the_engine_equals_the_reference_bit_for_bit(chunk: int) -> None:
    """Out-of-order events (up to 3 days, into earlier day buckets), replays, labels
    before and after their transactions, and 40 days (30-day expiry), fed in chunks of
    any size."""
    rng = np.random.default_rng(23)
    stream = []
    for record, ts in random_stream(seed=22, n=1500, users=25, mean_gap_s=2400):
        late = rng.random() < 0.15
        stream.append((record, ts - rng.uniform(0, 3 * 86_400) if late else ts))
        if rng.random() < 0.03:  # a replay: same transaction again, later in the stream
            stream.append(stream[int(rng.integers(max(0, len(stream) - 20), len(stream)))])
    labels = [
        (r["merchant_id"], r["transaction_id"], "fraud" if rng.random() < 0.7 else "legit",
         ts + float(rng.uniform(-86_400, 5 * 86_400)))
        for r, ts in stream if rng.random() < 0.1
    ]  # fmt: skip
    reference = ReferenceBuilder()
    reference.add_labels(labels)
    expected = reference.transactions(stream)
    engine = OfflineFeatureBuilder()
    engine.add_labels(labels)
    got = np.vstack(
        [engine.transactions(stream[i : i + chunk]) for i in range(0, len(stream), chunk)]
    )
    differ = [
        FEATURE_NAMES[j] for j in range(got.shape[1]) if not _identical(got[:, j], expected[:, j])
    ]
    assert not differ
    for name in ("user_txn_count_7d", "merchant_fraud_count_30d", "user_amount_zscore_30d"):
        assert np.nanmax(got[:, FEATURE_INDEX[name]]) > 1, name
