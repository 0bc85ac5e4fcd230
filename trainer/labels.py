"""Ground truth per transaction, as it was known at any point in time.

Sources can repeat or revise a label (a chargeback after a simulator label, an analyst
verdict after that), so every label event is kept; asking "what was known at time T"
takes the latest event available at or before T. A transaction nobody labelled is legit:
that is what an absent chargeback means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Label:
    transaction_id: str
    merchant_id: str
    user_id: str
    label: str  # "fraud" | "legit"
    available_ts: float
    scenario: str | None = None


class LabelBook:
    def __init__(self) -> None:
        self._events: dict[str, list[tuple[float, bool, str | None]]] = {}
        self.count = 0
        self.frauds = 0

    def add(self, label: Label) -> None:
        is_fraud = label.label == "fraud"
        self._events.setdefault(label.transaction_id, []).append(
            (label.available_ts, is_fraud, label.scenario)
        )
        self.count += 1
        self.frauds += is_fraud

    def _latest(self, transaction_id: str, cutoff: float) -> tuple[float, bool, str | None] | None:
        best = None
        for event in self._events.get(transaction_id, ()):
            if event[0] <= cutoff and (best is None or event[0] >= best[0]):
                best = event
        return best

    def targets(self, transaction_ids: Iterable[str], cutoff: float = math.inf) -> np.ndarray:
        """1 for transactions whose latest label known at `cutoff` says fraud, else 0."""
        out = []
        for tid in transaction_ids:
            event = self._latest(tid, cutoff) if tid in self._events else None
            out.append(1 if event is not None and event[1] else 0)
        return np.array(out, dtype=np.int8)

    def scenarios(self, transaction_ids: Iterable[str]) -> list[str | None]:
        """The scenario of the final fraud label of each transaction (None if not fraud)."""
        out: list[str | None] = []
        for tid in transaction_ids:
            event = self._latest(tid, math.inf) if tid in self._events else None
            out.append((event[2] or "unknown") if event is not None and event[1] else None)
        return out

    def fraud_known_since(self, transaction_ids: Iterable[str]) -> np.ndarray:
        """Earliest available_at of a fraud label per transaction (inf if never fraud)."""
        out = []
        for tid in transaction_ids:
            times = [e[0] for e in self._events.get(tid, ()) if e[1]]
            out.append(min(times) if times else math.inf)
        return np.array(out, dtype=np.float64)
