"""The whole product on simulator traffic: producer -> Kafka -> trainer -> MLflow ->
scorer -> alerts. Most injected frauds of the period the model never trained on must be
alerted, and legit transactions must alert within the alert budget."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter

import pytest

from fraudcore.contracts import parse_time
from tests.kafka_util import read_topic, values
from tests.scorer.harness import REPO, scorer_deployment
from tests.stack import TestStack

BUDGET = 0.03  # alert on 3 % of transactions; the simulator injects 2 % fraud
TRANSACTIONS = 30_000


def _run(module: str, args: list[str], env: dict[str, str], timeout_s: float) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"{module} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_injected_frauds_are_alerted_within_the_budget(
    stack: TestStack, request: pytest.FixtureRequest
) -> None:
    world = scorer_deployment(stack, f"e2e-{uuid.uuid4().hex[:8]}", partitions=3)
    request.addfinalizer(world.cleanup)
    env = world.service_env(PRODUCER_METRICS_PORT="0", TRANSACTIONS_PARTITIONS="3")
    _run(
        "producer",
        ["--speed", "0", "--start", "2026-01-01T00:00:00Z", "--count", str(TRANSACTIONS),
         "--seed", "7", "--users", "400", "--merchants", "120", "--fraud-rate", "0.02",
         "--label-delay", "1d", "--metrics-port", "0", "--no-create-topics", "--no-progress"],
        env,
        timeout_s=300,
    )  # fmt: skip
    _run(
        "trainer",
        ["train", "--model", "hist_gb", "--alert-budget", str(BUDGET), "--seed", "1",
         "--model-name", world.model_name, "--experiment", world.model_name],
        env | {"TRAINER_LABEL_DELAY": "1d"},
        timeout_s=600,
    )  # fmt: skip

    scorer = world.start_scorer("e2e")
    try:
        scorer.wait_ready()
        scores = values(read_topic({"bootstrap.servers": stack.kafka_bootstrap}, world.scores,
                                   expect=TRANSACTIONS, timeout_s=300))  # fmt: skip
    finally:
        scorer.stop()
    labels = values(read_topic({"bootstrap.servers": stack.kafka_bootstrap}, world.labels))
    alerts = values(read_topic({"bootstrap.servers": stack.kafka_bootstrap}, world.alerts))

    assert len(scores) == TRANSACTIONS
    truth = {label["transaction_id"]: label for label in labels}
    assert len(truth) == TRANSACTIONS, "every simulated transaction has its label"
    alerted = {a["transaction_id"] for a in alerts}

    # Judge on the last quarter of event time: the trainer's holdout, never trained on.
    times = {s["transaction_id"]: parse_time(s["event_time"]) for s in scores}
    cutoff = sorted(times.values())[int(0.75 * len(times))]
    unseen = [tx for tx, t in times.items() if t >= cutoff]
    frauds = [tx for tx in unseen if truth[tx]["label"] == "fraud"]
    legit = [tx for tx in unseen if truth[tx]["label"] == "legit"]
    caught = [tx for tx in frauds if tx in alerted]
    by_scenario = Counter(truth[tx].get("scenario") for tx in frauds)
    caught_by_scenario = Counter(truth[tx].get("scenario") for tx in caught)
    report = {s: f"{caught_by_scenario[s]}/{n}" for s, n in by_scenario.items()}

    assert len(frauds) >= 50, f"too few injected frauds in the holdout to judge: {len(frauds)}"
    assert len(caught) / len(frauds) >= 0.6, f"recall {len(caught)}/{len(frauds)} {report}"
    legit_alert_rate = sum(tx in alerted for tx in legit) / len(legit)
    assert legit_alert_rate <= BUDGET, f"legit alert rate {legit_alert_rate:.4f} {report}"
    # Every alert explains itself.
    assert all(a["reasons"] and a["reasons"][0]["text"] for a in alerts)
