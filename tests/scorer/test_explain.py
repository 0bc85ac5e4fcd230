"""scorer.explain: reasons are the features that raised the score, by the model's trees."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fraudcore.features import FEATURE_INDEX, FEATURE_NAMES
from fraudcore.offline import OfflineFeatureBuilder
from producer.population import PopulationConfig, build_population
from producer.simulator import Simulator, TrafficConfig
from scorer import explain
from scorer.treeeval import compile_model
from tests.scorer.models import boosted_model
from tests.scorer.signatures import SIGNATURES
from trainer.models import ModelConfig, fit_model

AMOUNT = FEATURE_INDEX["amount"]
RATIO = FEATURE_INDEX["user_amount_ratio_30d"]
COUNT_10M = FEATURE_INDEX["user_txn_count_10m"]
NEW_DEVICE = FEATURE_INDEX["user_new_device"]
MEAN_30D = FEATURE_INDEX["user_amount_mean_30d"]
FRAUD_RATIO = FEATURE_INDEX["merchant_fraud_ratio_30d"]


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ordinary rows, and frauds that are either bursts (many transactions in 10 minutes)
    or large amounts from a new device; every other feature is noise."""
    rng = np.random.default_rng(seed)
    rows = rng.lognormal(1.0, 1.0, (n, len(FEATURE_NAMES)))
    rows[:, NEW_DEVICE] = rng.random(n) < 0.05
    rows[:, COUNT_10M] = rng.poisson(0.2, n)
    rows[:, MEAN_30D] = rng.uniform(20, 80, n)
    rows[:, AMOUNT] = rows[:, MEAN_30D] * rng.lognormal(0, 0.3, n)
    rows[:, RATIO] = rows[:, AMOUNT] / rows[:, MEAN_30D]
    rows[:, FRAUD_RATIO] = 0.0
    target = np.zeros(n, dtype=int)
    burst = rng.random(n) < 0.03
    rows[burst, COUNT_10M] = rng.integers(8, 30, int(burst.sum()))
    big = (rng.random(n) < 0.03) & ~burst
    rows[big, AMOUNT] = rows[big, MEAN_30D] * rng.uniform(15, 40, int(big.sum()))
    rows[big, RATIO] = rows[big, AMOUNT] / rows[big, MEAN_30D]
    rows[big, NEW_DEVICE] = 1
    target[burst | big] = 1
    return rows, target


@pytest.fixture(scope="module")
def trained() -> tuple[explain.Explainer, np.ndarray, np.ndarray]:
    rows, target = _world(6000, seed=1)
    model = boosted_model(rows, target, iterations=60, alert_share=0.06)
    test_rows, test_target = _world(3000, seed=2)
    return explain.Explainer(model, compile_model(model)), test_rows, test_target


def test_the_reasons_are_what_the_model_learned(
    trained: tuple[explain.Explainer, np.ndarray, np.ndarray],
) -> None:
    explainer, rows, _ = trained
    bursts = rows[rows[:, COUNT_10M] >= 8]
    big = rows[(rows[:, RATIO] >= 15) & (rows[:, COUNT_10M] < 8)]
    assert len(bursts) > 30 and len(big) > 30
    burst_reasons = explainer.reasons(bursts)
    assert all(r and r[0]["feature"] == "user_txn_count_10m" for r in burst_reasons)
    big_reasons = explainer.reasons(big)
    big_features = [{reason["feature"] for reason in r} for r in big_reasons]
    assert all(f & {"amount", "user_amount_ratio_30d"} for f in big_features)
    for reasons in burst_reasons + big_reasons:
        contributions = [reason["contribution"] for reason in reasons]
        assert contributions == sorted(contributions, reverse=True)
        assert all(c > 0 for c in contributions) and len(reasons) <= 3
        assert all(any(ch.isdigit() for ch in r["text"]) or r["value"] == 1 for r in reasons)


def test_a_feature_that_reads_as_its_usual_is_never_a_reason(
    trained: tuple[explain.Explainer, np.ndarray, np.ndarray],
) -> None:
    explainer, rows, _ = trained
    row = rows[0].copy()
    row[MEAN_30D] = 50.0
    row[AMOUNT] = 50.001  # "amount 50.00; this user's usual is 50.00"
    assert explainer._reason(row, AMOUNT, contribution=1.0) is None
    row[AMOUNT] = 80.0
    reason = explainer._reason(row, AMOUNT, contribution=1.0)
    assert reason is not None and reason["text"] == "amount 80.00; this user's usual is 50.00"
    # The merchant fraud ratio is 0.0 everywhere, its training median too: it reads
    # "0.0% ...; usual is 0.0%" and is never offered, whatever the trees did with it.
    offered = [reason for row in explainer.reasons(rows) for reason in row]
    assert offered and all(r["feature"] != "merchant_fraud_ratio_30d" for r in offered)


def test_missing_values_and_unset_flags_are_never_reasons(
    trained: tuple[explain.Explainer, np.ndarray, np.ndarray],
) -> None:
    explainer, rows, _ = trained
    bursts = rows[rows[:, COUNT_10M] >= 8][:20].copy()
    bursts[:, COUNT_10M] = np.nan  # imputed: the model sees its median
    bursts[:, NEW_DEVICE] = 0
    for row in explainer.reasons(bursts):
        assert all(r["feature"] not in ("user_txn_count_10m", "user_new_device") for r in row)


def test_no_rows_no_reasons(trained: tuple[explain.Explainer, np.ndarray, np.ndarray]) -> None:
    explainer, rows, _ = trained
    assert explainer.reasons(rows[:0]) == []


def test_severity_quarters_the_room_above_the_threshold() -> None:
    assert explain.severity(0.9, 0.9) == "low"
    assert explain.severity(0.93, 0.9) == "medium"
    assert explain.severity(0.96, 0.9) == "high"
    assert explain.severity(1.0, 0.9) == "critical"


DAY_S = 86_400.0


def test_each_scenarios_alerts_name_its_signature_features() -> None:
    """A simulated world (the producer's own simulator, 1,000 cards, 50 days), the trainer's
    boosted model fitted on days 3-28, alerts on days 30-50 at a 2 % budget: for every
    scenario, at least 90 % of its alerts have one of its signature features among their
    reasons. The model and the reasons are computed as the trainer and scorer do."""
    population = build_population(PopulationConfig(seed=7, users=1000, merchants=200,
                                                   tx_per_user_day=3.0))  # fmt: skip
    start = 1_780_000_000.0 // DAY_S * DAY_S
    simulator = Simulator(population, TrafficConfig(start=start, fraud_rate=0.01))
    events = list(itertools.takewhile(lambda e: e.event_ts < start + 50 * DAY_S,
                                      simulator.events()))  # fmt: skip
    builder = OfflineFeatureBuilder()
    builder.add_labels(
        (e.tx["merchant_id"], e.tx["transaction_id"], "fraud", e.available_at)
        for e in events
        if e.label is not None and e.label["label"] == "fraud"
    )
    features = builder.transactions((e.tx, e.event_ts) for e in events)
    fraud = np.array([e.label is not None and e.label["label"] == "fraud" for e in events])
    scenario = np.array([e.scenario for e in events])
    day = (np.array([e.event_ts for e in events]) - start) / DAY_S
    train, test = (day >= 3) & (day < 28), day >= 30
    model = fit_model(features[train], fraud[train].astype(int), ModelConfig(kind="hist_gb"))
    explainer = explain.Explainer(model, compile_model(model))

    scores = explainer.compiled.score(features[test])
    alerted = scores >= np.quantile(scores, 1 - 0.02)
    reasons = explainer.reasons(features[test][alerted])
    for name, signature in SIGNATURES.items():
        of_scenario = [
            {r["feature"] for r in why}
            for why, s in zip(reasons, scenario[test][alerted], strict=True)
            if s == name
        ]
        assert len(of_scenario) >= 10, f"{name}: only {len(of_scenario)} alerts to judge"
        named = sum(bool(features_named & signature) for features_named in of_scenario)
        assert named >= 0.9 * len(of_scenario), (
            f"{name}: {named} of {len(of_scenario)} alerts name a signature feature"
        )
