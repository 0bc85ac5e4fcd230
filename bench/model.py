"""The model the benchmark scores with: what `python -m trainer` fits (an IsolationForest
of ModelConfig's size), on the days before the benchmark month, registered in MLflow."""

from __future__ import annotations

import logging

import numpy as np
from mlflow.tracking import MlflowClient

import mlflow
from bench.data import Slice
from fraudcore.logs import kv
from fraudcore.model import FraudModel, skops_trusted_types
from fraudcore.offline import OfflineFeatureBuilder
from trainer.models import ModelConfig, fit_model

logger = logging.getLogger(__name__)
EXPERIMENT = "fraud-bench"


def fit(training: Slice, trees: int) -> FraudModel:
    features = OfflineFeatureBuilder().transactions(
        zip(training.records, training.event_ts, strict=True)
    )
    config = ModelConfig(kind="isolation_forest", if_trees=trees)
    return fit_model(features, np.asarray(training.fraud), config, {"purpose": "benchmark"})


def register(tracking_uri: str, name: str, model: FraudModel) -> str:
    """Log `model` as version 1 of `name` and point `champion` at it."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=name):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            skops_trusted_types=skops_trusted_types(model),
            pip_requirements=[],
        )
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri).set_registered_model_alias(name, "champion", version)
    logger.info("model registered %s", kv(name=name, version=version))
    return version


def unregister(tracking_uri: str, name: str) -> None:
    """Remove the benchmark's registered model (its run stays in the experiment)."""
    try:
        MlflowClient(tracking_uri).delete_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        logger.warning("could not delete the benchmark model %s", kv(name=name, error=exc))
