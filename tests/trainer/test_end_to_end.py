"""From a real stream on Kafka to a registered champion in MLflow, and the gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import mlflow
from fraudcore.features import FEATURE_NAMES
from fraudcore.model import FraudModel
from tests.trainer.conftest import INVALID_TRANSACTIONS, StreamTopics
from trainer.cli import app
from trainer.metrics import evaluate
from trainer.models import ModelConfig
from trainer.pipeline import DataRequest, SplitRequest, holdout_split, load_table, train_on
from trainer.progress import Bars
from trainer.publish import publish
from trainer.registry import frame

runner = CliRunner()


def _train(topics: StreamTopics, name: str, tmp_path: Path, *args: str) -> dict:
    results = tmp_path / f"{name}.json"
    outcome = runner.invoke(
        app, ["train", "--quiet", "--results", str(results), *args], env=topics.env(name)
    )
    assert outcome.exit_code == 0, outcome.output
    summaries = json.loads(results.read_text())
    assert len(summaries) == 1
    return summaries[0]


def test_train_from_topics_registers_a_loadable_champion(
    stream_topics: StreamTopics, unique_name: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for key, value in stream_topics.env("unused").items():
        monkeypatch.setenv(key, value)
    name = unique_name("trainer-e2e")
    summary = _train(stream_topics, name, tmp_path, "--model", "ensemble", "--seed", "3")

    assert summary["alias"] == "champion" and summary["gate"]["reason"] == "no_champion"
    assert summary["data"]["transactions"] == len(stream_topics.stream.transactions)
    assert summary["data"]["invalid_transactions"] == len(INVALID_TRANSACTIONS)
    assert summary["data"]["invalid_labels"] == 1
    assert summary["test_frauds"] > 0 and summary["train_frauds"] > 0
    client = MlflowClient(stream_topics.mlflow_uri, registry_uri=stream_topics.mlflow_uri)
    version = client.get_model_version_by_alias(name, "champion")
    assert str(version.version) == summary["version"]
    assert version.tags["model_kind"] == "ensemble"
    assert float(version.tags["threshold"]) > 0
    run = client.get_run(summary["run_id"])
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert {"pr_curve.png", "score_histogram.png", "features.json", "imputation.json",
            "threshold.json", "fingerprint.txt"} <= artifacts  # fmt: skip
    assert run.data.tags["data_fingerprint"] == summary["fingerprint"]

    # Loaded back (sklearn flavor and pyfunc), the model scores the rebuilt holdout exactly
    # like FraudModel.score, and reproduces the figures the run logged.
    mlflow.set_tracking_uri(stream_topics.mlflow_uri)
    model = mlflow.sklearn.load_model(f"models:/{name}@champion")
    assert isinstance(model, FraudModel) and model.feature_names == FEATURE_NAMES
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    table, _ = load_table(
        DataRequest(label_delay_s=86400.0),
        {"bootstrap.servers": stream_topics.kafka_bootstrap},
        (stream_topics.transactions, stream_topics.labels),
        Bars(enabled=False),
    )
    split = holdout_split(table, SplitRequest(), 86400.0)
    test_x = table.features[split.test_rows]
    scores = model.score(test_x)
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(frame(test_x))), scores)
    figures = evaluate(scores, split.test_targets, table.event_ts[split.test_rows],
                       table.user_ids[split.test_rows], model.threshold)  # fmt: skip
    assert figures["average_precision"] == pytest.approx(run.data.metrics["average_precision"])
    assert model.metadata["data_fingerprint"] == summary["fingerprint"]


def test_gate_keeps_the_champion_when_the_candidate_is_worse(
    stream_topics: StreamTopics, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("trainer-gate")
    table, report = load_table(
        DataRequest(label_delay_s=86400.0),
        {"bootstrap.servers": stream_topics.kafka_bootstrap},
        (stream_topics.transactions, stream_topics.labels),
        Bars(enabled=False),
    )
    split = holdout_split(table, SplitRequest(), 86400.0)
    test_cards = table.user_ids[split.test_rows]
    test_ts = table.event_ts[split.test_rows]
    common = dict(tracking_uri=stream_topics.mlflow_uri, experiment="trainer-tests",
                  model_name=name, test_cards=test_cards, test_ts=test_ts,
                  scenarios=[None] * split.test_rows.size)  # fmt: skip

    good = train_on(table, split, ModelConfig("hist_gb", seed=1), label_delay_s=86400.0,
                    source="kafka")  # fmt: skip
    first = publish(good, report, **common)
    assert first.alias == "champion"

    # A deliberately weak candidate: the same model kind trained on shuffled labels.
    rng = np.random.default_rng(0)
    split.train_targets = rng.permutation(split.train_targets)
    weak = train_on(table, split, ModelConfig("hist_gb", seed=1, hgb_max_iter=5),
                    label_delay_s=86400.0, source="kafka")  # fmt: skip
    second = publish(weak, report, **common)

    assert second.alias == "challenger"
    assert second.decision.reason == "champion_not_beaten"
    assert second.decision.champion_version == first.version
    assert second.decision.champion is not None and second.decision.candidate is not None
    assert second.decision.champion > second.decision.candidate
    client = MlflowClient(stream_topics.mlflow_uri, registry_uri=stream_topics.mlflow_uri)
    assert client.get_model_version_by_alias(name, "champion").version == first.version
    assert client.get_model_version_by_alias(name, "challenger").version == second.version
    tags = client.get_model_version(name, second.version).tags
    assert tags["gate.decision"] == "challenger"
    assert float(tags["gate.champion"]) == pytest.approx(good.metrics["average_precision"])


def test_bootstrap_trains_once_then_does_nothing(
    stream_topics: StreamTopics, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("trainer-boot")
    env = {**stream_topics.env(name), "TRAINER_BOOTSTRAP_WAIT_S": "5"}
    first = runner.invoke(app, ["bootstrap", "--quiet", "--min-transactions", "500"], env=env)
    assert first.exit_code == 0, first.output
    client = MlflowClient(stream_topics.mlflow_uri, registry_uri=stream_topics.mlflow_uri)
    champion = client.get_model_version_by_alias(name, "champion")
    # Labelled fraud on the topic: the first champion is supervised, with its figures.
    assert champion.tags["model_kind"] == "hist_gb"
    assert champion.run_id is not None
    figures = client.get_run(champion.run_id).data.metrics
    for figure in ("roc_auc", "average_precision", "card_precision_at_100",
                   "precision_at_budget", "recall_at_budget"):  # fmt: skip
        assert figure in figures, figure
    assert any(key.startswith("recall_at_budget.") for key in figures)

    second = runner.invoke(app, ["bootstrap", "--quiet"], env=env)
    assert second.exit_code == 0, second.output
    versions = client.search_model_versions(f"name='{name}'")
    assert [v.version for v in versions] == [champion.version]


def test_bootstrap_without_labels_falls_back_to_an_isolation_forest(
    stream_topics: StreamTopics, unique_name: Callable[[str], str], new_topic: Callable[..., str]
) -> None:
    name = unique_name("trainer-boot-unlabelled")
    env = {**stream_topics.env(name), "TOPIC_LABELS": new_topic("no-labels"),
           "TRAINER_BOOTSTRAP_WAIT_S": "5"}  # fmt: skip
    done = runner.invoke(app, ["bootstrap", "--quiet", "--min-transactions", "500"], env=env)
    assert done.exit_code == 0, done.output
    client = MlflowClient(stream_topics.mlflow_uri, registry_uri=stream_topics.mlflow_uri)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.tags["model_kind"] == "isolation_forest"
