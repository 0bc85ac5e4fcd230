"""Alert reasons: the three features that sit furthest in the suspicious tail of the
model's training distribution, each in plain words with its numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fraudcore.features import FEATURE_INDEX, FEATURES, reason_text
from fraudcore.model import FraudModel

SEVERITIES = ("low", "medium", "high", "critical")


def severity(score: float, threshold: float) -> str:
    """How far past the threshold, in quarters of the remaining room up to 1."""
    room = max(1e-9, 1.0 - threshold)
    quarter = int(min(3, max(0, (score - threshold) / room * 4)))
    return SEVERITIES[quarter]


def _usual(model: FraudModel, row: np.ndarray, index: int) -> float | None:
    definition = FEATURES[index]
    if definition.usual_from is not None:
        own = float(row[FEATURE_INDEX[definition.usual_from]]) * definition.usual_scale
        if math.isfinite(own):
            return own
    reference = model.reference.get(definition.name)
    return reference.median if reference is not None else None


def reasons(model: FraudModel, row: np.ndarray, top: int = 3) -> list[dict[str, Any]]:
    """Up to `top` reasons for one feature vector (raw values, NaN = missing)."""
    ranked: list[tuple[float, int, float | None]] = []
    for index, definition in enumerate(FEATURES):
        value = float(row[index])
        if definition.direction == "none" or not math.isfinite(value):
            continue
        reference = model.reference.get(definition.name)
        if reference is None:
            continue
        position = reference.percentile(value)
        tail = position if definition.direction == "high" else 1.0 - position
        usual = _usual(model, row, index)
        # Ties at the very end of the distribution: the larger multiple of usual first.
        if usual is not None and usual > 0 and definition.direction == "high":
            tail += min(value / usual, 1e3) * 1e-6
        ranked.append((tail, index, usual))
    ranked.sort(key=lambda item: item[0], reverse=True)
    out = []
    for _, index, usual in ranked[:top]:
        value = float(row[index])
        out.append(
            {
                "feature": FEATURES[index].name,
                "value": value,
                "usual": usual,
                "text": reason_text(FEATURES[index].name, value, usual),
            }
        )
    return out
