"""The simulator without Kafka: determinism, contracts, habits, and every fraud scenario
doing what it claims."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict

import orjson
import pytest

from fraudcore.contracts import decode_label, decode_transaction, parse_time
from producer.events import Event
from producer.population import (
    NEW_CARD_HORIZON_DAYS,
    Population,
    PopulationConfig,
    build_population,
    distance_km,
)
from producer.scenarios import SCENARIOS
from producer.simulator import Simulator, TrafficConfig
from producer.traffic import EPOCH_WEEKDAY
from tests.producer.helpers import DAY, START, simulate


def test_population_is_deterministic_for_a_seed() -> None:
    a = build_population(PopulationConfig(seed=3, users=150, merchants=40))
    b = build_population(PopulationConfig(seed=3, users=150, merchants=40))
    c = build_population(PopulationConfig(seed=4, users=150, merchants=40))
    assert a.users == b.users and a.merchants == b.merchants
    assert a.users != c.users
    # Every user has usual merchants of each kind and one or two devices.
    for u in a.users:
        assert u.stores and u.online and u.atms and 1 <= len(u.devices) <= 2
        assert {a.merchants[i].kind for i in u.stores} == {"store"}
        assert {a.merchants[i].kind for i in u.online} == {"online"}


def test_same_seed_same_records_other_seed_other_records() -> None:
    _, first = simulate(seed=11, count=3000, fraud_rate=0.05)
    _, again = simulate(seed=11, count=3000, fraud_rate=0.05)
    _, other = simulate(seed=12, count=3000, fraud_rate=0.05)
    assert [(e.tx, e.label) for e in first] == [(e.tx, e.label) for e in again]
    assert [e.tx for e in first] != [e.tx for e in other]
    assert {e.tx["transaction_id"] for e in first}.isdisjoint(e.tx["transaction_id"] for e in other)


def test_every_record_meets_its_contract_and_time_never_goes_back() -> None:
    delay = 2 * DAY
    _, events = simulate(count=5000, fraud_rate=0.05, label_delay_s=delay)
    previous = START
    for e in events:
        tx, ts = decode_transaction(orjson.dumps(e.tx))
        assert e.label is not None
        label, available_at = decode_label(orjson.dumps(e.label))
        assert ts == e.event_ts >= previous  # non-decreasing overall, so per user too
        previous = ts
        assert available_at == pytest.approx(ts + delay, abs=1e-3)
        assert label["transaction_id"] == tx["transaction_id"]
        assert "label" not in tx and "scenario" not in tx and "fraud" not in tx
    assert len({e.tx["transaction_id"] for e in events}) == len(events)


def test_legit_traffic_follows_the_users_habits() -> None:
    pop, events = simulate(merchants=300, until=START + 3 * DAY, fraud_rate=0.0)
    users = {u.user_id: u for u in pop.users}
    merchants = {m.merchant_id: i for i, m in enumerate(pop.merchants)}
    usual = near = own_device = with_device = 0
    for e in events:
        u = users[e.tx["user_id"]]
        index = merchants[e.tx["merchant_id"]]
        usual += index in u.stores + u.online + u.atms
        near += distance_km(u.lat, u.lon, e.tx["lat"], e.tx["lon"]) < 300
        if "device_id" in e.tx:
            with_device += 1
            own_device += e.tx["device_id"] in u.devices
        assert e.tx["country"] == u.country  # legit payments happen at home
        into_active_hours = (parse_time(e.tx["timestamp"]) - u.active_open_s) % DAY
        assert into_active_hours <= u.active_len_s + 1
    assert {e.scenario for e in events} == {"legit"}
    assert usual / len(events) > 0.8
    assert near / len(events) > 0.8
    assert own_device == with_device > 0


RUN_END = START + 6 * DAY
FraudRun = tuple[Population, list[Event]]


@pytest.fixture(scope="module")
def fraud_run() -> FraudRun:
    """Six days of a small population at a high fraud rate."""
    return simulate(seed=5, users=300, merchants=80, until=RUN_END, fraud_rate=0.3)


def _by_user(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        out[e.tx["user_id"]].append(e)
    return out


def test_every_scenario_appears_and_every_fraud_is_labelled(fraud_run: FraudRun) -> None:
    _, events = fraud_run
    seen = {e.scenario for e in events}
    assert seen == {"legit", *SCENARIOS}
    for e in events:
        label = e.label
        assert label is not None and label["source"] == "simulator"
        if e.scenario == "legit":
            assert label["label"] == "legit" and "scenario" not in label
        else:
            assert label["label"] == "fraud" and label["scenario"] == e.scenario
    share = sum(e.scenario != "legit" for e in events) / len(events)
    assert 0.15 < share < 0.45  # the configured 0.3, in expectation


def test_impossible_travel_implies_an_absurd_speed(fraud_run: FraudRun) -> None:
    _, events = fraud_run
    checked = 0
    for history in _by_user(events).values():
        for before, e in itertools.pairwise(history):
            if e.scenario != "impossible_travel":
                continue
            km = distance_km(before.tx["lat"], before.tx["lon"], e.tx["lat"], e.tx["lon"])
            hours = max(e.event_ts - before.event_ts, 1e-3) / 3600
            assert e.tx["country"] != before.tx["country"]
            assert km / hours > 1000, (km, hours)  # faster than any airliner
            assert e.event_ts - before.event_ts <= 30 * 60
            checked += 1
    assert checked > 0


def test_card_testing_bursts_are_small_amounts_within_minutes(fraud_run: FraudRun) -> None:
    pop, events = fraud_run
    usual = {
        u.user_id: {pop.merchants[i].merchant_id for i in u.stores + u.online + u.atms}
        for u in pop.users
    }
    bursts: list[list[Event]] = []
    for history in _by_user(events).values():
        tests = [e for e in history if e.scenario == "card_testing"]
        for e in tests:
            if (
                bursts
                and bursts[-1][-1].tx["user_id"] == e.tx["user_id"]
                and (e.event_ts - bursts[-1][-1].event_ts < 60)
            ):
                bursts[-1].append(e)
            else:
                bursts.append([e])
    assert bursts
    online = 0
    for burst in bursts:
        assert 5 <= len(burst) <= 30
        assert burst[-1].event_ts - burst[0].event_ts <= 6 * 60
        for e in burst:
            assert 0.5 <= e.tx["amount"] <= 5.0
            assert e.tx["merchant_id"] not in usual[e.tx["user_id"]]
        online += burst[0].tx["channel"] == "online"
    assert online / len(bursts) > 0.5


def test_compromised_merchant_turns_every_transaction_there_for_days(fraud_run: FraudRun) -> None:
    _, events = fraud_run
    at_merchant: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        at_merchant[e.tx["merchant_id"]].append(e)
    windows = 0
    for history in at_merchant.values():
        hit = [e.event_ts for e in history if e.scenario == "compromised_merchant"]
        if not hit:
            continue
        first, last = min(hit), max(hit)
        inside = [e.label for e in history if first <= e.event_ts <= last]
        assert all(label is not None and label["label"] == "fraud" for label in inside)
        # A window lasts 2-5 days; one cut short by the end of the run proves nothing.
        if len(hit) >= 10 and first + 2 * DAY <= RUN_END:
            assert last - first >= DAY
            windows += 1
    assert windows > 0


def test_account_takeover_uses_a_new_device_and_a_new_country(fraud_run: FraudRun) -> None:
    _, events = fraud_run
    checked = 0
    for history in _by_user(events).values():
        legit_amounts = [e.tx["amount"] for e in history if e.scenario == "legit"]
        episode_start: dict[str, int] = {}  # device -> index of the episode's first payment
        for i, e in enumerate(history):
            if e.scenario != "account_takeover":
                continue
            before = history[: episode_start.setdefault(e.tx["device_id"], i)]
            assert e.tx["device_id"] not in {b.tx.get("device_id") for b in before}
            assert e.tx["country"] not in {b.tx["country"] for b in before}
            assert e.tx["channel"] == "online"
            assert e.tx["amount"] > statistics.median(legit_amounts)
            checked += 1
    assert checked > 0


def test_amount_spike_is_far_above_the_users_usual(fraud_run: FraudRun) -> None:
    _, events = fraud_run
    checked = 0
    for history in _by_user(events).values():
        legit = [e.tx["amount"] for e in history if e.scenario == "legit"]
        for e in history:
            if e.scenario == "amount_spike" and len(legit) >= 5:
                assert e.tx["amount"] >= 4 * statistics.median(legit)
                checked += 1
    assert checked > 0


def test_label_jitter_delays_within_bounds() -> None:
    _, events = simulate(count=2000, label_delay_s=3600.0, label_jitter_s=600.0)
    delays = [e.available_at - e.event_ts for e in events]
    assert all(3600.0 <= d < 4200.0 + 1e-6 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # really jittered


def test_bad_simulation_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="fraud rate"):
        simulate(count=1, fraud_rate=0.9)
    with pytest.raises(ValueError, match="unknown scenarios"):
        simulate(count=1, scenarios=("card_testing", "alien_abduction"))


def test_new_cards_are_issued_over_time_and_pay_only_after() -> None:
    config = PopulationConfig(seed=3, users=400, merchants=60, new_card_share=0.25)
    pop = build_population(config)
    issued = pop.issued_after_s
    new = issued > 0
    assert 0.15 < new.mean() < 0.35
    assert issued.max() <= NEW_CARD_HORIZON_DAYS * DAY
    # The rest of the population does not depend on the share of new cards.
    assert build_population(PopulationConfig(seed=3, users=400, merchants=60)).users == pop.users
    events = list(
        itertools.takewhile(
            lambda e: e.event_ts < START + 60 * DAY,
            Simulator(pop, TrafficConfig(start=START, fraud_rate=0.0)).events(),
        )
    )
    first: dict[str, float] = {}
    for e in events:
        first.setdefault(e.tx["user_id"], e.event_ts)
    for user, offset in zip(pop.users, issued.tolist(), strict=True):
        if user.user_id in first:
            assert first[user.user_id] >= START + offset
    # Cards issued within the 60 days do pay within them: first payments keep coming.
    late = [t for t in first.values() if t > START + 7 * DAY]
    assert len(late) > 20


def test_payments_follow_a_weekly_rhythm() -> None:
    _, events = simulate(seed=4, users=300, until=START + 28 * DAY, fraud_rate=0.0)
    per_weekday = [0] * 7
    for e in events:
        per_weekday[(int(e.event_ts // DAY) + EPOCH_WEEKDAY) % 7] += 1
    saturday, sunday = per_weekday[5], per_weekday[6]
    weekdays = statistics.mean(per_weekday[:4])
    # Configured: Saturday 1.35, Sunday 0.65 against about 0.97 Monday to Thursday.
    assert saturday > 1.2 * weekdays and sunday < 0.8 * weekdays
    mean_per_day = len(events) / 28 / 300
    assert 0.9 * 5.0 < mean_per_day < 1.1 * 5.0  # tx_per_user_day holds over a week
