"""Alert reasons: the three features that sit furthest in the suspicious tail of the
model's training distribution, each in plain words with its numbers.

Ranking is vectorised over the alerts of a batch (the scorer explains alerts, not every
score), with the training quantiles that travel with the model version."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fraudcore.features import FEATURE_INDEX, FEATURES, reason_text
from fraudcore.model import QUANTILE_LEVELS, FraudModel

SEVERITIES = ("low", "medium", "high", "critical")


def severity(score: float, threshold: float) -> str:
    """How far past the threshold, in quarters of the remaining room up to 1."""
    room = max(1e-9, 1.0 - threshold)
    quarter = int(min(3, max(0, (score - threshold) / room * 4)))
    return SEVERITIES[quarter]


class Explainer:
    """Reasons for one model version (built once when the version is loaded)."""

    def __init__(self, model: FraudModel, top: int = 3) -> None:
        self.top = top
        self.candidates: list[int] = []  # features that may be offered as a reason
        self.quantiles: list[np.ndarray] = []
        self.high: list[bool] = []
        self.median = np.full(len(FEATURES), np.nan)
        for index, definition in enumerate(FEATURES):
            reference = model.reference.get(definition.name)
            if reference is None:
                continue
            self.median[index] = reference.median
            if definition.direction != "none":
                self.candidates.append(index)
                self.quantiles.append(np.asarray(reference.quantiles, dtype=np.float64))
                self.high.append(definition.direction == "high")
        self.usual_from = [FEATURE_INDEX[d.usual_from] if d.usual_from else -1 for d in FEATURES]
        # `usual` of the candidates as arrays, for all alerts of a batch at once.
        sources = [self.usual_from[i] for i in self.candidates]
        self._usual_source = np.array([max(s, 0) for s in sources], dtype=np.intp)
        self._no_source = np.array([s < 0 for s in sources], dtype=bool)
        self._usual_scale = np.array([FEATURES[i].usual_scale for i in self.candidates])
        self._high = np.array(self.high, dtype=bool)

    def usual(self, row: np.ndarray, index: int) -> float | None:
        source = self.usual_from[index]
        if source >= 0:
            own = float(row[source]) * FEATURES[index].usual_scale
            if math.isfinite(own):
                return own
        median = self.median[index]
        return float(median) if math.isfinite(median) else None

    def reasons(self, rows: np.ndarray) -> list[list[dict[str, Any]]]:
        """Up to `top` reasons for each row (raw feature values, NaN = missing)."""
        if rows.shape[0] == 0 or not self.candidates:
            return [[] for _ in range(rows.shape[0])]
        values = rows[:, self.candidates]
        tail = np.empty_like(values)
        for k, quantiles in enumerate(self.quantiles):
            position = np.interp(values[:, k], quantiles, QUANTILE_LEVELS, left=0.0, right=1.0)
            tail[:, k] = position if self.high[k] else 1.0 - position
        tail[np.isnan(values)] = -np.inf
        usuals = self._usuals(rows)  # NaN = none
        # Ties at the very end of the distribution: the larger multiple of usual first.
        with np.errstate(divide="ignore", invalid="ignore"):
            multiple = np.minimum(values / usuals, 1e3) * 1e-6
        rank = tail + np.where(self._high & (usuals != 0) & ~np.isnan(usuals), multiple, 0.0)
        columns = np.arange(len(self.candidates))
        out = []
        for r in range(rows.shape[0]):
            row = rows[r]
            valid = tail[r] > -np.inf
            # Ascending by rank, then by candidate: the last `top`, reversed, are the reasons.
            order = columns[valid][np.lexsort((columns[valid], rank[r, valid]))]
            picked = []
            for k in order[-self.top :][::-1].tolist():
                index = self.candidates[k]
                value = float(row[index])
                usual = float(usuals[r, k])
                usual_or_none = usual if math.isfinite(usual) else None
                picked.append(
                    {
                        "feature": FEATURES[index].name,
                        "value": value,
                        "usual": usual_or_none,
                        "text": reason_text(FEATURES[index].name, value, usual_or_none),
                    }
                )
            out.append(picked)
        return out

    def _usuals(self, rows: np.ndarray) -> np.ndarray:
        """`usual` of every candidate of every row (NaN where there is none), at once."""
        own = rows[:, self._usual_source] * self._usual_scale  # column 0 where none
        own[:, self._no_source] = np.nan
        median = np.broadcast_to(self.median[self.candidates], own.shape)
        return np.where(np.isfinite(own), own, median)
