"""Alert reasons: the features that raised this transaction's score the most, in the
model's own terms, each in plain words with its numbers.

What a feature contributed comes from the model's trees (path attribution in every
component, `CompiledModel.contributions`), computed for the alerts of a batch only. A
feature is a reason only if it raised the score, has a value (a missing one was
imputed: that is not a fact about the transaction), and reads differently from what is
usual: its own history's usual where the feature has one, else the training median.
A flag (a new device, at night) is a reason only when it is set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fraudcore.features import FEATURE_INDEX, FEATURES, FLAG_FEATURES, reason_text
from fraudcore.model import FraudModel
from scorer.treeeval import CompiledModel

SEVERITIES = ("low", "medium", "high", "critical")


def severity(score: float, threshold: float) -> str:
    """How far past the threshold, in quarters of the remaining room up to 1."""
    room = max(1e-9, 1.0 - threshold)
    quarter = int(min(3, max(0, (score - threshold) / room * 4)))
    return SEVERITIES[quarter]


class Explainer:
    """Reasons for one model version (built once when the version is loaded)."""

    def __init__(self, model: FraudModel, compiled: CompiledModel, top: int = 3) -> None:
        self.top = top
        self.compiled = compiled
        self.median = np.array(
            [
                model.reference[d.name].median if d.name in model.reference else np.nan
                for d in FEATURES
            ]
        )
        self.usual_from = [FEATURE_INDEX[d.usual_from] if d.usual_from else -1 for d in FEATURES]
        self._flag = np.array([d.name in FLAG_FEATURES for d in FEATURES])

    def usual(self, row: np.ndarray, index: int) -> float | None:
        """What is usual for this feature: from the user's own history where the feature
        says how, else the training median; None if neither is known."""
        source = self.usual_from[index]
        if source >= 0:
            own = float(row[source]) * FEATURES[index].usual_scale
            if math.isfinite(own):
                return own
        median = self.median[index]
        return float(median) if math.isfinite(median) else None

    def reasons(self, rows: np.ndarray) -> list[list[dict[str, Any]]]:
        """Up to `top` reasons for each row (raw feature values, NaN = missing), the
        largest contribution first."""
        if rows.shape[0] == 0:
            return []
        contributions = self.compiled.contributions(rows)
        eligible = (contributions > 0) & ~np.isnan(rows) & (~self._flag | (rows == 1))
        out = []
        for r in range(rows.shape[0]):
            row = rows[r]
            # Largest first; ties by feature order, so reasons are deterministic.
            order = np.lexsort((np.arange(rows.shape[1]), -contributions[r]))
            picked: list[dict[str, Any]] = []
            for index in order.tolist():
                if contributions[r, index] <= 0 or len(picked) == self.top:
                    break
                if eligible[r, index]:
                    reason = self._reason(row, index, float(contributions[r, index]))
                    if reason is not None:
                        picked.append(reason)
            out.append(picked)
        return out

    def _reason(self, row: np.ndarray, index: int, contribution: float) -> dict[str, Any] | None:
        name = FEATURES[index].name
        value = float(row[index])
        usual = self.usual(row, index)
        text = reason_text(name, value, usual)
        compared = usual is not None and "{usual" in FEATURES[index].reason
        if compared and text == reason_text(name, value, value):
            return None  # reads as its usual: "0.0% ...; usual is 0.0%" explains nothing
        return {
            "feature": name,
            "value": value,
            "usual": usual,
            "contribution": contribution,
            "text": text,
        }
