"""Small real models for scorer tests, registered in the test MLflow."""

from __future__ import annotations

import numpy as np
from mlflow.tracking import MlflowClient
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

import mlflow
from fraudcore.features import FEATURE_NAMES
from fraudcore.model import Component, FeatureReference, FraudModel, skops_trusted_types
from fraudcore.offline import OfflineFeatureBuilder
from tests.scorer.streams import random_stream


def _unfitted(features: np.ndarray, metadata: dict[str, object]) -> FraudModel:
    """A FraudModel for `features` without components yet: median imputation (NaN and
    infinities ignored), the training reference of every feature."""
    finite = np.where(np.isfinite(features), features, np.nan)
    return FraudModel(
        feature_names=FEATURE_NAMES,
        imputation={
            name: float(np.nanmedian(col)) if np.isfinite(col).any() else 0.0
            for name, col in zip(FEATURE_NAMES, finite.T, strict=True)
        },
        threshold=1.0,
        components=[],
        reference={
            n: FeatureReference.fit(c) for n, c in zip(FEATURE_NAMES, finite.T, strict=True)
        },
        metadata=metadata,
    )


def _calibrated(model: FraudModel, component: Component, rows: np.ndarray, share: float) -> None:
    """Calibrate `component` on its raw scores of `rows`, make it the model's only one,
    and set the threshold so that `share` of the rows alert."""
    raw = FraudModel.component_raw(component, model.prepare(rows))
    component.calibration = np.quantile(raw, np.linspace(0, 1, 201))
    model.components = [component]
    model.threshold = float(np.quantile(model.score(rows), 1 - share))


def isolation_model(seed: int = 0, alert_share: float = 0.02, trees: int = 50) -> FraudModel:
    """An IsolationForest FraudModel fitted on a synthetic stream; alerts ~alert_share."""
    features = OfflineFeatureBuilder().transactions(random_stream(seed=seed, n=3000))
    model = _unfitted(features, {"purpose": "test", "seed": seed, "alert_budget": alert_share})
    forest = IsolationForest(n_estimators=trees, max_samples=256, random_state=seed)
    forest.fit(model.prepare(features))
    _calibrated(model, Component("isolation_forest", forest), features, alert_share)
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
    """A one-component HistGradientBoosting FraudModel fitted on `features` (infinities
    clipped for the fit only) and `target`, for tests of scores and reasons."""
    rows = np.where(np.isfinite(features), features, np.nan)
    model = _unfitted(rows, {"purpose": "test", "alert_budget": alert_share})
    booster = HistGradientBoostingClassifier(max_iter=iterations, random_state=0)
    booster.fit(np.clip(model.prepare(rows), -1e300, 1e300), target)
    _calibrated(model, Component("hist_gradient_boosting", booster), rows, alert_share)
    return model
