"""`make up`'s path, end to end: the launcher starts the whole stack (Kafka, Redis,
MLflow, Prometheus, producer, alerting, the bootstrap, the scorer and the retrainer) as
`make up` does, on free ports in a folder of this test's, with the same simulated world at
half its cards (FRAUD_E2E_CARDS, 1,000; `make e2e` runs `make up`'s 2,000).

The history is backfilled, the bootstrap trains the first champion on it, the scorer
scores it and goes on live. Judged on what the champion never saw, the transactions after
its test period (its threshold was chosen on that period's scores):
- the champion is supervised and its MLflow run has its figures and plots;
- the alerted share is within half to twice the alert budget;
- recall at the budget from the test period on, overall and per injected scenario, is far
  above what alerting the same share at random would catch (that share itself);
- each alert's reasons raised its score, and the alerts of each scenario name its
  signature features;
- live first payments of brand-new cards are not alerted: the model learned nothing
  that makes a card risky for being new;
- every feature the scorer computed while catching up on the history, card and merchant
  alike, equals the trainer's for the same transaction.

The figures are printed (`make e2e` shows them; the README quotes a run).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from dotenv import dotenv_values
from mlflow.tracking import MlflowClient

from fraudcore.contracts import format_time, parse_time
from fraudcore.features import FEATURE_NAMES, MERCHANT_NAMES
from fraudcore.settings import env_file
from launcher.layout import layout_for
from launcher.runner import Launcher
from tests.kafka_util import produce_records, read_topic, values
from tests.metrics_util import sample
from tests.scorer.signatures import SIGNATURES
from tests.stack import free_port
from trainer.pipeline import DataRequest, load_table
from trainer.progress import Bars

pytestmark = pytest.mark.slow

CARDS = int(os.environ.get("FRAUD_E2E_CARDS", "1000"))
CATCH_UP_S = 300.0


@dataclass(frozen=True)
class UpStack:
    launcher: Launcher
    kafka: dict[str, str]
    mlflow_uri: str
    scorer_url: str
    model_name: str


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    run_dir = tmp_path_factory.mktemp("make-up")
    ports = {name: free_port() for name in (
        "kafka", "controller", "kafka_metrics", "redis", "mlflow", "prometheus", "exporter",
        "producer", "scorer", "alerting", "retrainer",
    )}  # fmt: skip
    # What .env says for `make up`, on free ports: the launcher and the apps it starts
    # read the environment first.
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"localhost:{ports['kafka']}",
        "KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "KAFKA_METRICS_PORT": str(ports["kafka_metrics"]),
        "REDIS_URL": f"redis://localhost:{ports['redis']}/0",
        "MLFLOW_PORT": str(ports["mlflow"]),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        "PROMETHEUS_PORT": str(ports["prometheus"]),
        "REDIS_EXPORTER_PORT": str(ports["exporter"]),
        "PRODUCER_METRICS_PORT": str(ports["producer"]),
        "SCORER_HTTP_PORT": str(ports["scorer"]),
        "ALERTING_HTTP_PORT": str(ports["alerting"]),
        "TRAINER_METRICS_PORT": str(ports["retrainer"]),
        "ALERTS_DATABASE_URL": f"sqlite:///{run_dir / 'alerts.db'}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        layout = replace(layout_for("stack"), run_dir=run_dir, cards=CARDS)
        launcher = Launcher(layout)
        try:
            launcher.up()
            stack = UpStack(
                launcher,
                {"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]},
                env["MLFLOW_TRACKING_URI"],
                f"http://127.0.0.1:{ports['scorer']}",
                str(dotenv_values(env_file())["MODEL_NAME"]),
            )
            _wait_scored(stack, f"http://127.0.0.1:{ports['producer']}/metrics")
            yield stack
        finally:
            launcher.down()


def _wait_scored(stack: UpStack, producer_metrics: str) -> None:
    """Until the scorer has scored the whole history (the live rate is a few a minute)."""
    deadline = time.monotonic() + CATCH_UP_S
    produced = scored = 0.0
    while time.monotonic() < deadline:
        produced = sample(producer_metrics, "producer_delivered_total", stream="transactions")
        scored = sample(stack.scorer_url + "/metrics", "scorer_transactions_scored_total")
        if produced > 0 and scored >= produced:
            return
        time.sleep(2)
    raise AssertionError(f"scored {scored:.0f} of {produced:.0f} after {CATCH_UP_S:.0f} s")


@dataclass(frozen=True)
class Champion:
    version: str
    test_start: float
    kind: str
    threshold: float
    budget: float
    test_end: float
    metrics: dict[str, float]
    artifacts: set[str]


@pytest.fixture(scope="module")
def champion(up: UpStack) -> Champion:
    client = MlflowClient(up.mlflow_uri, registry_uri=up.mlflow_uri)
    version = client.get_model_version_by_alias(up.model_name, "champion")
    run = client.get_run(version.tags["run_id"])
    threshold_doc = json.loads(
        Path(client.download_artifacts(run.info.run_id, "threshold.json")).read_text()
    )
    return Champion(
        version=str(version.version),
        kind=version.tags["model_kind"],
        threshold=float(version.tags["threshold"]),
        budget=float(threshold_doc["alert_budget"]),
        test_end=parse_time(run.data.params["test_end"]),
        test_start=parse_time(run.data.params["test_start"]),
        metrics=run.data.metrics,
        artifacts={a.path for a in client.list_artifacts(run.info.run_id)},
    )


@dataclass(frozen=True)
class Unseen:
    """What the champion was never fitted on, with scores and truth: the test period
    (its threshold was chosen there) and the transactions after it (nothing was chosen
    there), `scores`."""

    scores: dict[str, float]
    test_period_scores: dict[str, float]
    scenario: dict[str, str]  # transaction id -> scenario, the frauds of both
    alerts: list[dict[str, Any]]  # the alerts of both, in stream order
    # The busiest merchant without a reported fraud: where a new card pays in the test.
    quiet_merchant: str

    def after_test_period(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["transaction_id"] in self.scores]


@pytest.fixture(scope="module")
def unseen(up: UpStack, champion: Champion) -> Unseen:
    scores: dict[str, float] = {}
    test_period: dict[str, float] = {}
    busy: Counter[str] = Counter()
    for s in values(read_topic(up.kafka, "scores", timeout_s=120)):
        at = parse_time(s["event_time"])
        if s["model_version"] != champion.version or at < champion.test_start:
            continue
        (scores if at > champion.test_end else test_period)[s["transaction_id"]] = s["score"]
        busy[s["merchant_id"]] += 1
    frauds = [
        label
        for label in values(read_topic(up.kafka, "labels", timeout_s=120))
        if label["label"] == "fraud"
    ]
    scenario = {
        label["transaction_id"]: label.get("scenario", "unknown")
        for label in frauds
        if label["transaction_id"] in scores or label["transaction_id"] in test_period
    }
    reported = {label["merchant_id"] for label in frauds}
    quiet = next(m for m, _ in busy.most_common() if m not in reported)
    alerts = [
        a
        for a in values(read_topic(up.kafka, "alerts", timeout_s=120))
        if a["transaction_id"] in scores or a["transaction_id"] in test_period
    ]
    return Unseen(scores, test_period, scenario, alerts, quiet)


def test_the_first_champion_is_supervised_with_its_figures(champion: Champion) -> None:
    assert champion.kind in ("hist_gb", "ensemble")
    m = champion.metrics
    for name in ("roc_auc", "average_precision", "card_precision_at_100",
                 "precision_at_budget", "recall_at_budget"):  # fmt: skip
        assert math.isfinite(m[name]), name
    assert any(k.startswith("recall_at_budget.") for k in m), sorted(m)
    assert {"pr_curve.png", "score_histogram.png", "threshold.json"} <= champion.artifacts
    # Better than chance on its own test period: a random ranking has ROC AUC 0.5 and
    # average precision equal to the share of fraud among the rows.
    assert m["roc_auc"] > 0.5
    assert m["average_precision"] > m["frauds"] / m["rows"]
    print(f"\nchampion v{champion.version} {champion.kind}: " + ", ".join(
        f"{k} {v:.3f}" for k, v in sorted(m.items()) if k.startswith(("roc", "average",
        "card", "precision", "recall"))
    ))  # fmt: skip


def test_the_alert_share_on_unseen_traffic_holds_the_budget(
    champion: Champion, unseen: Unseen
) -> None:
    scored = len(unseen.scores)
    alerted = sum(score >= champion.threshold for score in unseen.scores.values())
    share = alerted / scored
    print(f"\nunseen: {scored} scored, {alerted} alerted, share {share:.3%}, "
          f"budget {champion.budget:.2%}")  # fmt: skip
    test_period = sum(s >= champion.threshold for s in unseen.test_period_scores.values())
    print(f"test period as scored live: {len(unseen.test_period_scores)} scored, "
          f"{test_period / len(unseen.test_period_scores):.3%} alerted; "
          f"the trainer's figure {champion.metrics['alert_rate']:.3%}")  # fmt: skip
    assert champion.budget * scored >= 10, "too little unseen traffic to judge the share"
    assert 0.5 * champion.budget <= share <= 2 * champion.budget
    # Each alert was published once, with the same decision as its score.
    published = unseen.after_test_period()
    assert len({a["transaction_id"] for a in published}) == alerted == len(published)


def test_recall_at_the_budget_per_scenario(champion: Champion, unseen: Unseen) -> None:
    """Over the test period and after it: the threshold is a share of the test period's
    scores, chosen without a label."""
    scores = {**unseen.test_period_scores, **unseen.scores}
    frauds = Counter(unseen.scenario.values())
    caught = Counter(
        name for tx, name in unseen.scenario.items() if scores[tx] >= champion.threshold
    )
    share = sum(s >= champion.threshold for s in scores.values()) / len(scores)
    print("\nrecall at the budget from the test period on:")
    for name in sorted(frauds):
        print(f"  {name}: {caught[name]}/{frauds[name]} = {caught[name] / frauds[name]:.2f}")
    total = sum(frauds.values())
    assert total >= 10, f"only {total} unseen frauds"
    recall = sum(caught.values()) / total
    print(f"  all: {sum(caught.values())}/{total} = {recall:.2f}")
    # Alerting the same share at random catches that share of the frauds.
    assert recall >= 10 * share


def test_alerts_are_explained_by_their_scenarios_features(unseen: Unseen) -> None:
    """Over the test period and after it: the reasons do not depend on the threshold."""
    assert unseen.alerts
    for alert in unseen.alerts:
        reasons = alert["reasons"]
        assert 1 <= len(reasons) <= 3
        contributions = [r["contribution"] for r in reasons]
        assert all(c > 0 for c in contributions) and contributions == sorted(contributions)[::-1]
        assert all(r["value"] != r["usual"] for r in reasons), reasons
    named: defaultdict[str, list[bool]] = defaultdict(list)
    for alert in unseen.alerts:
        name = unseen.scenario.get(alert["transaction_id"])
        if name in SIGNATURES:
            features = {r["feature"] for r in alert["reasons"]}
            named[name].append(bool(features & SIGNATURES[name]))
    example = max(
        (a for a in unseen.alerts if a["transaction_id"] in unseen.scenario),
        key=lambda a: a["event_time"],
        default=unseen.alerts[-1],
    )
    shown = {k: example[k] for k in ("transaction_id", "score", "threshold", "severity")}
    shown["reasons"] = [r["text"] for r in example["reasons"]]
    print(f"\nthe newest alerted fraud ({unseen.scenario.get(example['transaction_id'])}):")
    print(json.dumps(shown, indent=2))
    print("alerts naming their scenario's signature features:")
    for name, hits in sorted(named.items()):
        print(f"  {name}: {sum(hits)}/{len(hits)}")
    judged = [hit for hits in named.values() for hit in hits]
    assert len(judged) >= 10, f"only {len(judged)} alerted frauds to judge"
    assert sum(judged) >= 0.9 * len(judged)
    for name, hits in named.items():
        if len(hits) >= 10:
            assert sum(hits) >= 0.9 * len(hits), name


@pytest.fixture(scope="module")
def feature_differences(up: UpStack, champion: Champion) -> tuple[int, Counter[str]]:
    """The transactions from the test period on, through the scorer while it caught up on
    the history and through the trainer's offline builder: how many rows were compared,
    and per feature on how many the two disagree."""
    table, _ = load_table(
        DataRequest(label_delay_s=8 * 86_400.0), up.kafka, ("transactions", "labels"),
        Bars(enabled=False),
    )  # fmt: skip
    row = {tx: i for i, tx in enumerate(table.transaction_ids)}
    differ: Counter[str] = Counter()
    compared = 0
    for score in values(read_topic(up.kafka, "scores", timeout_s=120)):
        tx = score["transaction_id"]
        if parse_time(score["event_time"]) < champion.test_start or tx not in row:
            continue
        compared += 1
        offline = table.features[row[tx]]
        for j, name in enumerate(FEATURE_NAMES):
            online = score["features"][name]
            online = math.nan if online is None else float(online)
            same = (math.isnan(online) and math.isnan(offline[j])) or math.isclose(
                online, offline[j], rel_tol=1e-9, abs_tol=1e-9
            )
            if not same:
                differ[name] += 1
    print(f"\n{compared} transactions compared; features that differ: "
          + (", ".join(f"{n} {c / compared:.2%}" for n, c in differ.most_common()) or "none"))  # fmt: skip
    return compared, differ


def test_the_scorer_computed_the_trainers_card_features(
    feature_differences: tuple[int, Counter[str]],
) -> None:
    compared, differ = feature_differences
    assert compared > 0
    assert not {n: c for n, c in differ.items() if n not in MERCHANT_NAMES}


def test_the_scorer_computed_the_trainers_merchant_features(
    feature_differences: tuple[int, Counter[str]],
) -> None:
    _, differ = feature_differences
    assert not {n: c for n, c in differ.items() if n in MERCHANT_NAMES}


def test_a_new_cards_first_payment_is_not_an_alert(
    up: UpStack, champion: Champion, unseen: Unseen
) -> None:
    tag = uuid.uuid4().hex[:8]
    now = time.time()
    payments = [
        {
            "schema_version": 1, "transaction_id": f"e2e-{tag}-{i}", "user_id": f"e2e-{tag}-{i}",
            "merchant_id": unseen.quiet_merchant, "amount": amount, "timestamp": format_time(now - 60 + i),
            "currency": "EUR", "merchant_category": "grocery", "channel": "pos",
            "country": "FR", "lat": 48.85, "lon": 2.35, "device_id": f"dev-{tag}-{i}",
        }
        for i, amount in enumerate((1.0, 4.5, 12.0, 25.0, 38.0, 60.0, 95.0, 150.0))
    ]  # fmt: skip
    consumer = Consumer({**up.kafka, "group.id": f"e2e-{tag}", "isolation.level": "read_committed"})
    partitions = consumer.list_topics("scores", timeout=10).topics["scores"].partitions
    ends = [
        TopicPartition("scores", p, consumer.get_watermark_offsets(TopicPartition("scores", p))[1])
        for p in partitions
    ]
    consumer.assign(ends)
    produce_records(up.kafka, "transactions", payments)
    ids = {p["transaction_id"] for p in payments}
    scores: dict[str, float] = {}
    deadline = time.monotonic() + 60
    try:
        while len(scores) < len(ids) and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=1.0):
                if message.error() is None:
                    score = orjson.loads(message.value() or b"null")
                    if score["transaction_id"] in ids:
                        scores[score["transaction_id"]] = score["score"]
    finally:
        consumer.close()
    assert set(scores) == ids
    print(f"\nnew cards' first payments: scores {sorted(round(s, 3) for s in scores.values())}"
          f", threshold {champion.threshold:.4f}")  # fmt: skip
    assert all(score < champion.threshold for score in scores.values())
