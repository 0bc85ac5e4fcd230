"""Log a run to MLflow, register the model, run the promotion gate, move an alias."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import mlflow
from fraudcore.features import FEATURE_NAMES
from fraudcore.logs import kv
from fraudcore.model import FraudModel, skops_trusted_types
from trainer import plots
from trainer.metrics import evaluate
from trainer.pipeline import DataReport, Outcome
from trainer.registry import (
    GateDecision,
    champion_version,
    decide,
    decision_tags,
    frame,
    load_version,
    move_alias,
    wait_for_mlflow,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    run_id: str
    version: str
    alias: str
    decision: GateDecision
    champion_metrics: dict[str, float] | None


def _requirements() -> list[str]:
    # Pinned from this environment: cheaper and more exact than MLflow's inference.
    return [
        f"{pkg}=={package_version(pkg)}"
        for pkg in ("mlflow", "scikit-learn", "numpy", "pandas", "skops")
    ]


def _artifacts(directory: Path, outcome: Outcome, report: DataReport) -> None:
    model = outcome.model
    targets = outcome.split.test_targets
    plots.pr_curve(directory / "pr_curve.png", targets, outcome.test_scores, model.threshold)
    plots.score_histogram(
        directory / "score_histogram.png", targets, outcome.test_scores, model.threshold
    )
    documents: dict[str, Any] = {
        "features.json": list(FEATURE_NAMES),
        "imputation.json": model.imputation,
        "threshold.json": {
            "threshold": model.threshold,
            "alert_budget": outcome.config.alert_budget,
            "chosen_on": model.metadata.get("threshold_from"),
            "threshold_on_training": model.metadata.get("threshold_on_training"),
        },
        "metrics.json": outcome.metrics,
        "data_report.json": report.summary(),
        "metadata.json": model.metadata,
    }
    for name, content in documents.items():
        (directory / name).write_text(json.dumps(content, indent=2, sort_keys=True, default=str))
    (directory / "fingerprint.txt").write_text(outcome.fingerprint + "\n")


def _evaluate_champion(
    name: str,
    version: str,
    outcome: Outcome,
    table_cards: np.ndarray,
    table_ts: np.ndarray,
    scenarios: list[str | None],
) -> tuple[dict[str, float] | None, str | None]:
    """The champion's figures on the candidate's holdout, or the reason it could not run."""
    try:
        champion = load_version(name, version)
        scores = np.asarray(champion.predict(frame(outcome.test_features)), dtype=np.float64)
    except Exception as exc:  # any failure to load or score means the champion is unusable
        logger.warning("champion could not be evaluated %s", kv(version=version, error=exc))
        return None, f"{type(exc).__name__}: {exc}"
    return evaluate(
        scores, outcome.split.test_targets, table_ts, table_cards, champion.threshold, scenarios
    ), None


def publish(
    outcome: Outcome,
    report: DataReport,
    *,
    tracking_uri: str,
    experiment: str,
    model_name: str,
    test_cards: np.ndarray,
    test_ts: np.ndarray,
    scenarios: list[str | None],
    startup_timeout_s: float = 60.0,
) -> Published:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    wait_for_mlflow(client, startup_timeout_s)
    model = outcome.model
    kind = outcome.config.kind
    with mlflow.start_run(run_name=f"{kind}-{outcome.fingerprint[:8]}") as run:
        mlflow.log_params(
            {
                **outcome.config.params(),
                **outcome.split.holdout.describe(),
                "source": report.source,
                "label_delay_s": model.metadata["label_delay_s"],
                "model_name": model_name,
            }
        )
        mlflow.log_metrics({k: v for k, v in outcome.metrics.items() if np.isfinite(v)})
        mlflow.log_metrics(
            {
                "data.transactions": report.transactions,
                "data.invalid_transactions": sum(report.invalid_transactions.values()),
                "data.invalid_labels": sum(report.invalid_labels.values()),
                "data.fraud_labels": report.fraud_labels,
                "data.feature_seconds": report.seconds,
                "train.rows": model.metadata["training_rows"],
                "train.frauds": model.metadata["training_frauds"],
                "threshold": model.threshold,
            }
        )
        mlflow.set_tags({"model_kind": kind, "data_fingerprint": outcome.fingerprint})
        with tempfile.TemporaryDirectory(prefix="trainer-") as tmp:
            _artifacts(Path(tmp), outcome, report)
            mlflow.log_artifacts(tmp)
        example = frame(outcome.test_features[:5])
        signature = infer_signature(example, model.predict(example))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=model_name,
            # skops, not pickle: loading trusts exactly our model classes and sklearn's.
            skops_trusted_types=skops_trusted_types(model),
            pip_requirements=_requirements(),
        )
        version = str(info.registered_model_version)
        for key, value in {
            "threshold": model.threshold,
            "model_kind": kind,
            "data_fingerprint": outcome.fingerprint,
            "run_id": run.info.run_id,
        }.items():
            client.set_model_version_tag(model_name, version, key, str(value))
        _check_round_trip(model_name, version, model, outcome.test_features)

        current = champion_version(client, model_name)
        champion_metrics, error = (None, None)
        if current is not None and current != version:
            champion_metrics, error = _evaluate_champion(
                model_name, current, outcome, test_cards, test_ts, scenarios
            )
        decision = decide(outcome.metrics, champion_metrics, current, error)
        mlflow.log_metrics(
            {
                f"gate.{k}": v
                for k, v in (("candidate", decision.candidate), ("champion", decision.champion))
                if v is not None and np.isfinite(v)
            }
        )
        if champion_metrics is not None:
            mlflow.log_metrics(
                {f"champion.{k}": v for k, v in champion_metrics.items() if np.isfinite(v)}
            )
        tags = decision_tags(decision)
        mlflow.set_tags(tags)
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        # Last step: only now may the scorer see this version.
        alias = move_alias(client, model_name, version, decision)
        mlflow.set_tag("alias", alias)
    return Published(run.info.run_id, version, alias, decision, champion_metrics)


def _check_round_trip(name: str, version: str, model: FraudModel, features: np.ndarray) -> None:
    """The registered version, loaded back, must score like the model in memory."""
    sample = features[: min(256, features.shape[0])]
    loaded = load_version(name, version)
    if not np.allclose(loaded.score(sample), model.score(sample), rtol=0, atol=1e-12):
        raise RuntimeError(f"version {version} of {name} does not score like the trained model")
