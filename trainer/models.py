"""Fitting a FraudModel: components, calibration, imputation, reference, threshold."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from threadpoolctl import threadpool_limits

from fraudcore.features import FEATURE_NAMES, FEATURE_SET
from fraudcore.logs import kv
from fraudcore.model import Component, FeatureReference, FraudModel
from trainer.settings import ModelKind

logger = logging.getLogger(__name__)

CALIBRATION_POINTS = 1001


class NeedsLabelsError(ValueError):
    """A supervised model was asked for, but the training targets have no fraud."""


@dataclass(frozen=True)
class ModelConfig:
    kind: ModelKind = "isolation_forest"
    seed: int = 42
    alert_budget: float = 0.005
    # Modest on purpose: the scorer evaluates the trees compiled at >100k rows/s.
    if_trees: int = 150
    if_max_samples: int = 1024
    hgb_max_iter: int = 250
    hgb_learning_rate: float = 0.05
    # 15 leaves and balanced class weights: chosen on the handbook's validation folds
    # (trainer/README.md), never on its test set.
    hgb_max_leaf_nodes: int = 15
    hgb_min_samples_leaf: int = 20
    hgb_l2: float = 1.0
    # "balanced" reweights the rare fraud class; None / "none" keeps the raw frequencies;
    # a number is the weight of a fraud row against 1 for a legit one.
    hgb_class_weight: str | None = "balanced"
    # Share of features each split may look at (1.0: all); below 1 decorrelates the trees.
    hgb_max_features: float = 1.0
    # Ensemble weights of the calibrated components.
    if_weight: float = 1.0
    hgb_weight: float = 1.0

    def params(self) -> dict[str, Any]:
        return {k: ("none" if v is None else v) for k, v in asdict(self).items()}


def imputation_values(features: np.ndarray) -> dict[str, float]:
    """Training median per feature, ignoring NaN; 0 for a feature never present."""
    out = {}
    for i, name in enumerate(FEATURE_NAMES):
        column = features[:, i]
        finite = column[np.isfinite(column)]
        out[name] = float(np.median(finite)) if finite.size else 0.0
    return out


def calibration_grid(raw: np.ndarray) -> np.ndarray:
    """Sorted raw scores at evenly spaced quantiles: raw -> empirical CDF in [0, 1]."""
    return np.quantile(raw, np.linspace(0.0, 1.0, CALIBRATION_POINTS))


def _fit_isolation_forest(prepared: np.ndarray, config: ModelConfig) -> IsolationForest:
    forest = IsolationForest(
        n_estimators=config.if_trees,
        max_samples=min(config.if_max_samples, prepared.shape[0]),
        random_state=config.seed,
        n_jobs=1,
    )
    return forest.fit(prepared)


def _fit_hist_gb(
    prepared: np.ndarray, targets: np.ndarray, config: ModelConfig
) -> HistGradientBoostingClassifier:
    if int(targets.sum()) < 2 or int(targets.sum()) == targets.size:
        raise NeedsLabelsError(
            f"hist_gb needs labelled frauds and legit transactions in the training period; "
            f"got {int(targets.sum())} frauds in {targets.size} rows"
        )
    model = HistGradientBoostingClassifier(
        max_iter=config.hgb_max_iter,
        learning_rate=config.hgb_learning_rate,
        max_leaf_nodes=config.hgb_max_leaf_nodes,
        min_samples_leaf=config.hgb_min_samples_leaf,
        l2_regularization=config.hgb_l2,
        class_weight=_class_weight(config.hgb_class_weight),
        max_features=config.hgb_max_features,
        early_stopping=False,
        random_state=config.seed,
    )
    # One OpenMP thread: on a busy 2-core machine, spinning OpenMP workers cost far more
    # than they gain at these sizes (a 2k-row fit went from ~80 s to ~1 s under load).
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit(prepared, targets)


def _class_weight(text: str | None) -> str | dict[int, float] | None:
    if text in (None, "none"):
        return None
    if text == "balanced":
        return "balanced"
    try:
        return {0: 1.0, 1: float(text)}
    except ValueError:
        raise ValueError(f"class weight must be balanced, none or a number, not {text!r}") from None


def fit_model(
    features: np.ndarray,
    targets: np.ndarray,
    config: ModelConfig,
    metadata: dict[str, Any] | None = None,
) -> FraudModel:
    """Fit the components on the (imputed) training rows and wrap them in a FraudModel.

    Every component sees the same imputed matrix the scorer will hand it (FraudModel.prepare
    runs before all components), so HistGradientBoosting's own NaN handling is never used.
    """
    imputation = imputation_values(features)
    model = FraudModel(
        feature_names=FEATURE_NAMES,
        imputation=imputation,
        threshold=1.0,
        components=[],
        reference={n: FeatureReference.fit(features[:, i]) for i, n in enumerate(FEATURE_NAMES)},
        metadata={**(metadata or {}), "feature_set": FEATURE_SET},
    )
    prepared = model.prepare(features)
    if config.kind in ("isolation_forest", "ensemble"):
        forest = _fit_isolation_forest(prepared, config)
        component = Component("isolation_forest", forest, weight=config.if_weight)
        component.calibration = calibration_grid(FraudModel.component_raw(component, prepared))
        model.components.append(component)
    if config.kind in ("hist_gb", "ensemble"):
        booster = _fit_hist_gb(prepared, targets, config)
        component = Component("hist_gradient_boosting", booster, weight=config.hgb_weight)
        component.calibration = calibration_grid(FraudModel.component_raw(component, prepared))
        model.components.append(component)
    if not model.components:
        raise ValueError(f"unknown model kind {config.kind!r}")
    model.threshold = budget_threshold(model.score(features), config.alert_budget)
    model.metadata.update(
        model_kind=config.kind, seed=config.seed, alert_budget=config.alert_budget
    )
    logger.info(
        "model fitted %s",
        kv(
            kind=config.kind,
            rows=features.shape[0],
            frauds=int(targets.sum()),
            threshold=round(model.threshold, 6),
        ),
    )
    return model


def budget_threshold(scores: np.ndarray, budget: float) -> float:
    """The score at or above which `budget` of the rows fall (at most that share alerts)."""
    if scores.size == 0:
        return 1.0
    return float(np.quantile(scores, 1.0 - budget, method="higher"))
