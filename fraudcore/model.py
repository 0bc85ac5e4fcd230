"""The model contract between the trainer and the scorer.

The trainer fits a FraudModel and logs it to MLflow (sklearn flavor); the scorer loads
the version the `champion` alias points at. Everything a version needs to score and
explain travels inside it: the feature order, the imputation values, the threshold, the
calibration of each component and the training distribution of each feature (for
reasons and drift).

`score()` is the reference path (stock sklearn). The scorer replaces only the
per-component tree evaluation with a compiled one and then calls the same `combine()`,
so both paths agree to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ComponentKind = Literal["isolation_forest", "hist_gradient_boosting"]
# Quantile levels stored per feature; the median is the "usual" value in alert reasons.
QUANTILE_LEVELS = np.array([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
PSI_BINS = 10


@dataclass
class FeatureReference:
    """Training distribution of one feature."""

    quantiles: np.ndarray  # values at QUANTILE_LEVELS
    psi_edges: np.ndarray  # inner bin edges (PSI_BINS - 1 values, ascending)
    psi_fractions: np.ndarray  # share of training rows per bin (PSI_BINS values)

    @property
    def median(self) -> float:
        return float(self.quantiles[4])

    def percentile(self, value: float) -> float:
        """Approximate position of `value` in the training distribution, 0..1."""
        return float(np.interp(value, self.quantiles, QUANTILE_LEVELS, left=0.0, right=1.0))

    @classmethod
    def fit(cls, column: np.ndarray) -> FeatureReference:
        values = column[np.isfinite(column)]
        if values.size == 0:
            values = np.zeros(1)
        quantiles = np.quantile(values, QUANTILE_LEVELS)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        return cls(quantiles, edges, counts / counts.sum())


@dataclass
class Component:
    kind: ComponentKind
    estimator: Any
    weight: float = 1.0
    # Sorted raw training scores at evenly spaced quantiles: raw -> CDF in [0, 1].
    # None: the raw score is used as is (it must already lie in [0, 1]).
    calibration: np.ndarray | None = None


class FeatureContractError(ValueError):
    """A model trained on other features than the ones its user computes."""


def feature_mismatch(trained: tuple[str, ...], computed: tuple[str, ...]) -> str | None:
    """How the features a model was trained on differ from the ones computed, in words;
    None when they are the same, in the same order."""
    if trained == computed:
        return None
    parts = [f"trained on {len(trained)} features, {len(computed)} are computed"]
    missing = [n for n in trained if n not in computed]
    extra = [n for n in computed if n not in trained]
    if missing:
        parts.append(f"not computed: {missing}")
    if extra:
        parts.append(f"not trained on: {extra}")
    if not missing and not extra:
        at = next(i for i, (a, b) in enumerate(zip(trained, computed, strict=True)) if a != b)
        parts.append(f"same names in another order, first at position {at}: "
                     f"{trained[at]!r} trained, {computed[at]!r} computed")  # fmt: skip
    return "; ".join(parts)


@dataclass
class FraudModel:
    feature_names: tuple[str, ...]
    imputation: dict[str, float]
    threshold: float
    components: list[Component]
    reference: dict[str, FeatureReference] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def check_features(self, names: tuple[str, ...]) -> None:
        """Raise FeatureContractError unless this model was trained on exactly `names`,
        in order (the vectors its user will hand it)."""
        mismatch = feature_mismatch(tuple(self.feature_names), names)
        if mismatch:
            raise FeatureContractError(mismatch)

    def prepare(self, features: np.ndarray) -> np.ndarray:
        """Replace missing values (NaN) with the imputation value of their column."""
        fill = np.array([self.imputation.get(n, 0.0) for n in self.feature_names])
        out = np.asarray(features, dtype=np.float64)
        missing = np.isnan(out)
        if missing.any():
            out = np.where(missing, fill, out)
        return out

    @staticmethod
    def component_raw(component: Component, prepared: np.ndarray) -> np.ndarray:
        """Reference raw score of one component with stock sklearn."""
        if component.kind == "isolation_forest":
            return np.asarray(-component.estimator.score_samples(prepared), dtype=np.float64)
        if component.kind == "hist_gradient_boosting":
            return np.asarray(component.estimator.predict_proba(prepared)[:, 1], dtype=np.float64)
        raise ValueError(f"unknown component kind {component.kind!r}")

    def combine(self, raws: list[np.ndarray]) -> np.ndarray:
        """Weighted mean of the calibrated component scores, in [0, 1]."""
        total = np.zeros_like(raws[0])
        weights = 0.0
        for component, raw in zip(self.components, raws, strict=True):
            if component.calibration is not None:
                grid = np.linspace(0.0, 1.0, len(component.calibration))
                calibrated = np.interp(raw, component.calibration, grid)
            else:
                calibrated = raw
            total = total + component.weight * calibrated
            weights += component.weight
        return np.clip(total / weights, 0.0, 1.0)

    def score(self, features: np.ndarray) -> np.ndarray:
        prepared = self.prepare(features)
        return self.combine([self.component_raw(c, prepared) for c in self.components])

    def predict(self, features: Any) -> np.ndarray:
        """pyfunc entry point: a DataFrame or array with feature_names columns -> scores."""
        if hasattr(features, "loc"):
            features = features[list(self.feature_names)].to_numpy(dtype=np.float64)
        return self.score(np.asarray(features, dtype=np.float64))


# MLflow stores sklearn models with skops, which refuses to load types it was not told
# to trust. We trust exactly our own model classes and scikit-learn/numpy internals.
_TRUSTED_PREFIXES = ("fraudcore.model.", "sklearn.", "numpy.")


def skops_trusted_types(model: FraudModel) -> list[str]:
    """The types `model` serialises to that skops must be told to trust (for
    mlflow.sklearn.log_model(..., skops_trusted_types=...)); raises on anything else."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise TypeError(f"model contains types outside fraudcore/sklearn/numpy: {foreign}")
    return list(untrusted)
