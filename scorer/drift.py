"""Feature drift: population stability index of live features against the bins stored
with the model version, over an exponentially decayed window of recent transactions."""

from __future__ import annotations

import numpy as np

from fraudcore.model import FraudModel

# Smallest share a bin is given, so an empty bin does not make the PSI infinite.
_FLOOR = 1e-4


class DriftTracker:
    def __init__(self, model: FraudModel, half_life_rows: float = 50_000) -> None:
        self.names = [n for n in model.feature_names if n in model.reference]
        self.columns = [model.feature_names.index(n) for n in self.names]
        self.edges = [model.reference[n].psi_edges for n in self.names]
        self.expected = [np.maximum(model.reference[n].psi_fractions, _FLOOR) for n in self.names]
        self.counts = [np.zeros(len(e)) for e in self.expected]
        self.half_life = half_life_rows

    def update(self, features: np.ndarray) -> None:
        if features.shape[0] == 0:
            return
        decay = 0.5 ** (features.shape[0] / self.half_life)
        for i, column in enumerate(self.columns):
            values = features[:, column]
            values = values[~np.isnan(values)]
            bins = np.searchsorted(self.edges[i], values, side="right")
            self.counts[i] = self.counts[i] * decay + np.bincount(
                bins, minlength=len(self.expected[i])
            )

    def psi(self) -> dict[str, float]:
        out = {}
        for name, counts, expected in zip(self.names, self.counts, self.expected, strict=True):
            total = counts.sum()
            if total <= 0:
                continue
            actual = np.maximum(counts / total, _FLOOR)
            out[name] = float(np.sum((actual - expected) * np.log(actual / expected)))
        return out
