"""Small real models for scorer tests, registered in the test MLflow."""

from __future__ import annotations

import numpy as np
from mlflow.tracking import MlflowClient
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

import mlflow
from fraudcore.features import FEATURE_NAMES, OfflineFeatureBuilder
from fraudcore.model import Component, FeatureReference, FraudModel, skops_trusted_types
from tests.scorer.streams import random_stream


def isolation_model(seed: int = 0, alert_share: float = 0.02, trees: int = 50) -> FraudModel:
    """An IsolationForest FraudModel fitted on a synthetic stream; alerts ~alert_share."""
    features = OfflineFeatureBuilder().transactions(random_stream(seed=seed, n=3000))
    imputation = {
        name: float(np.nanmedian(col)) if np.isfinite(col).any() else 0.0
        for name, col in zip(FEATURE_NAMES, features.T, strict=True)
    }
    model = FraudModel(
        feature_names=FEATURE_NAMES,
        imputation=imputation,
        threshold=1.0,
        components=[],
        reference={
            n: FeatureReference.fit(c) for n, c in zip(FEATURE_NAMES, features.T, strict=True)
        },
        metadata={"purpose": "test", "seed": seed, "alert_budget": alert_share},
    )
    prepared = model.prepare(features)
    forest = IsolationForest(n_estimators=trees, max_samples=256, random_state=seed).fit(prepared)
    raw = -forest.score_samples(prepared)
    model.components = [
        Component("isolation_forest", forest, 1.0, np.quantile(raw, np.linspace(0, 1, 201)))
    ]
    model.threshold = float(np.quantile(model.score(features), 1 - alert_share))
    return model


def register(tracking_uri: str, name: str, model: FraudModel, alias: str = "champion") -> str:
    """Log and register `model` under `name`, point `alias` at it; returns the version."""
    mlflow.set_tracking_uri(tracking_uri)
    # The Default experiment (id 0) exists on every server: the client remembers the
    # last experiment set in this process, which a test's private MLflow does not have.
    with mlflow.start_run(run_name=f"test-{name}", experiment_id="0"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            skops_trusted_types=skops_trusted_types(model),
            pip_requirements=[],  # inference would import the model in a subprocess: slow
        )
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri).set_registered_model_alias(name, alias, version)
    return version


def boosted_model(
    features: np.ndarray, target: np.ndarray, iterations: int = 30, alert_share: float = 0.1
) -> FraudModel:
    """A one-component HistGradientBoosting FraudModel fitted on `features` (missing
    values imputed by the column median; infinities clipped for the fit only) and `target`,
    calibrated and thresholded as the trainer does, for tests of scores and reasons."""
    finite = np.where(np.isfinite(features), features, np.nan)
    imputation = {
        name: float(np.nanmedian(col)) if np.isfinite(col).any() else 0.0
        for name, col in zip(FEATURE_NAMES, finite.T, strict=True)
    }
    model = FraudModel(
        feature_names=FEATURE_NAMES,
        imputation=imputation,
        threshold=1.0,
        components=[],
        reference={
            n: FeatureReference.fit(c) for n, c in zip(FEATURE_NAMES, finite.T, strict=True)
        },
    )
    prepared = np.clip(model.prepare(finite), -1e300, 1e300)
    booster = HistGradientBoostingClassifier(max_iter=iterations, random_state=0)
    booster.fit(prepared, target)
    raw = booster.predict_proba(prepared)[:, 1]
    model.components = [
        Component("hist_gradient_boosting", booster, 1.0, np.quantile(raw, np.linspace(0, 1, 201)))
    ]
    model.threshold = float(np.quantile(model.score(finite), 1 - alert_share))
    return model
