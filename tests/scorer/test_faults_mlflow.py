"""MLflow stopped for a minute under a running scorer: scoring goes on with the champion
it has loaded, and once MLflow is back the scorer follows the alias again.

The registry is a private MLflow (tests/private_stack.py): the shared test MLflow serves
every other test. It is stopped the way an operator would (`python -m launcher down
--services mlflow`) and started again on the same data.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.deployment import Deployment, ServiceProcess
from tests.kafka_util import produce_records, read_topic, values
from tests.metrics_util import sample
from tests.private_stack import private_stack
from tests.scorer.harness import wait_until
from tests.scorer.models import isolation_model, register
from tests.scorer.reference import committed_scores
from tests.scorer.streams import stream_records
from tests.stack import TestStack

OUTAGE_S = 60.0  # "MLflow stopped for a minute" (issue #13)
FEED_EVERY_S = 5.0  # a chunk of transactions this often during the outage
CHUNK = 20


def _metric(scorer: ServiceProcess, name: str) -> float:
    return sample(scorer.url + "/metrics", name)


def _scored_at_least(scorer: ServiceProcess, n: int) -> Callable[[], bool]:
    return lambda: committed_scores(scorer) >= n


def _model(scorer: ServiceProcess) -> dict[str, Any]:
    answer = httpx.get(scorer.url + "/model", timeout=5)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_mlflow_stopped_for_a_minute_scoring_goes_on_and_the_alias_is_followed_after(
    make_world: Callable[..., Deployment],
    kafka: dict[str, str],
    stack: TestStack,
    tmp_path: Path,
) -> None:
    with private_stack(tmp_path / "services", ["mlflow"]) as private:
        registry = private.layout.mlflow_uri
        own = TestStack(
            kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, mlflow_uri=registry
        )
        name = f"mlflow-outage-{uuid.uuid4().hex[:8]}"
        champion = register(registry, name, isolation_model(seed=4, trees=20))
        world = make_world(partitions=3, model_name=name, on=own, SCORER_MODEL_POLL_S="1")
        before = stream_records(seed=41, n=60)
        scorer = world.start_scorer("mlflow-outage")
        try:
            scorer.wait_ready()
            produce_records(kafka, world.transactions, before)
            wait_until(lambda: committed_scores(scorer) >= len(before), 60, "the first scores")
            failures_before = _metric(scorer, "scorer_model_load_failures_total")
            log_before = len(scorer.log.read_text())

            private.stop("mlflow")
            assert not _answers(registry), "MLflow still answers after it was stopped"
            during: list[dict[str, Any]] = []
            stopped_at = time.monotonic()
            for feed in range(int(OUTAGE_S // FEED_EVERY_S)):
                time.sleep(max(0.0, stopped_at + feed * FEED_EVERY_S - time.monotonic()))
                chunk = stream_records(seed=100 + feed, n=CHUNK)
                produce_records(kafka, world.transactions, chunk)
                during += chunk
                # Scored while MLflow is down, not held back until it returns.
                wait_until(
                    _scored_at_least(scorer, len(before) + len(during)),
                    30,
                    f"{len(before) + len(during)} transactions scored with MLflow down",
                )
                assert httpx.get(scorer.url + "/ready", timeout=5).status_code == 200
                assert _model(scorer)["version"] == champion
            time.sleep(max(0.0, stopped_at + OUTAGE_S - time.monotonic()))
            assert scorer.proc.poll() is None, scorer.tail()
            assert not _answers(registry), "MLflow came back during the outage"
            # The outage was seen and counted, as ScorerModelLoadFailing expects
            # (prometheus/rules/alerts.yml), and said in the log.
            assert _metric(scorer, "scorer_model_load_failures_total") > failures_before
            assert "model registry unreachable" in scorer.log.read_text()[log_before:]

            private.start("mlflow")
            successor = register(registry, name, isolation_model(seed=5, alert_share=0.05))
            assert successor != champion
            wait_until(
                lambda: _model(scorer)["version"] == successor,
                60,
                "the scorer to follow the alias once MLflow is back",
            )
            after = stream_records(seed=43, n=60)
            produce_records(kafka, world.transactions, after)
            total = len(before) + len(during) + len(after)
            scores = values(read_topic(kafka, world.scores, expect=total, timeout_s=120))
        finally:
            code = scorer.stop()
        assert code == 0, scorer.tail()

    assert len(scores) == total, "a score is duplicated or missing"
    version = {s["transaction_id"]: s["model_version"] for s in scores}
    assert set(version) == {r["transaction_id"] for r in before + during + after}
    assert {version[r["transaction_id"]] for r in before + during} == {champion}
    assert {version[r["transaction_id"]] for r in after} == {successor}


def _answers(uri: str) -> bool:
    try:
        return httpx.get(uri + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
