"""Scores read back from the `scores` topic, judged like the offline holdout.

A score message carries the transaction's event time, card (`user_id`), score and the
feature vector the model saw. Collected into a FeatureTable together with the ground truth
from the labels topic, the holdout code (`make_split`) applies the very same book split and
known-compromised exclusion as offline, and `evaluate` computes the same figures. Comparing
the streamed feature vectors with the offline ones, row by row, shows where the two paths
differ and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fraudcore.contracts import ContractError, decode_record, parse_time
from fraudcore.features import FEATURE_NAMES
from trainer.dataset import FeatureTable
from trainer.holdout import Holdout, Split, make_split
from trainer.labels import LabelBook
from trainer.metrics import evaluate
from trainer.timeutil import iso

logger = logging.getLogger(__name__)

_NAN = float("nan")


@dataclass
class ScoreCollector:
    """One row per transaction id; a repeat is counted (exactly-once says there is none)
    and the first score is kept."""

    ids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    cards: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)
    # Where each score came from: its partition (= its transaction's: same key, same
    # partition count, same client partitioner) and its scorer batch (processed_at).
    partitions: list[int] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, raw: bytes | None, partition: int = 0) -> None:
        try:
            record = decode_record(raw, "scores")
            event_ts = parse_time(record["event_time"], "event_time")
        except ContractError as exc:
            self.invalid[exc.reason] += 1
            return
        tid = record["transaction_id"]
        if tid in self._seen:
            self.duplicates += 1
            return
        self._seen.add(tid)
        features = record.get("features") or {}
        self.ids.append(tid)
        self.times.append(event_ts)
        self.cards.append(record["user_id"])
        self.scores.append(float(record["score"]))
        # JSON null is a missing feature (NaN), as in the offline table.
        self.vectors.append([_value(features.get(name)) for name in FEATURE_NAMES])
        self.partitions.append(partition)
        self.batches.append(record["processed_at"])

    def partition_skew_hours(self) -> dict[str, float]:
        """How far apart in event time the partitions were when the scorer scored them:
        per scorer batch, the latest event time of each partition in it, max minus min.
        Merchant state is shared by every partition, so a partition that runs ahead sees
        merchant days the others have not counted yet."""
        frame = pd.DataFrame(
            {"batch": self.batches, "partition": self.partitions, "ts": self.times}
        )
        latest = frame.groupby(["batch", "partition"])["ts"].max()
        by_batch = latest.groupby(level="batch")
        spread = (by_batch.max() - by_batch.min())[by_batch.size() > 1] / 3600.0
        if spread.empty:
            return {"batches": 0.0}
        return {
            "batches": float(spread.size),
            "median": round(float(spread.median()), 2),
            "p90": round(float(spread.quantile(0.9)), 2),
            "max": round(float(spread.max()), 2),
        }

    def table(self, labels: LabelBook) -> tuple[FeatureTable, np.ndarray]:
        """(feature table in event-time order, scores in the same order)."""
        order = np.argsort(np.asarray(self.times, dtype=np.float64), kind="stable")
        width = len(FEATURE_NAMES)
        features = np.asarray(self.vectors, dtype=np.float64).reshape(-1, width)
        table = FeatureTable(
            features=features[order],
            event_ts=np.asarray(self.times, dtype=np.float64)[order],
            transaction_ids=np.asarray(self.ids, dtype=object)[order],
            user_ids=np.asarray(self.cards, dtype=object)[order],
            labels=labels,
        )
        return table, np.asarray(self.scores, dtype=np.float64)[order]


def _value(value: Any) -> float:
    return _NAN if value is None else float(value)


def stream_figures(
    table: FeatureTable, scores: np.ndarray, holdout: Holdout, threshold: float
) -> tuple[Split, dict[str, float]]:
    """The offline split and figures, computed on streamed scores and streamed truth."""
    split = make_split(table, holdout)
    rows = split.test_rows
    figures = evaluate(
        scores[rows],
        split.test_targets,
        table.event_ts[rows],
        table.user_ids[rows],
        threshold,
        table.labels.scenarios(table.transaction_ids[rows]),
    )
    return split, figures


def compare_rows(
    offline: FeatureTable,
    offline_rows: np.ndarray,
    offline_scores: np.ndarray,
    stream: FeatureTable,
    stream_rows: np.ndarray,
    stream_scores: np.ndarray,
) -> dict[str, Any]:
    """Row-by-row comparison of two row sets by transaction id: which rows only one side
    has, how many feature vectors differ and in which features (lower/higher online), and
    how far apart the scores of identical vectors are. Scores are aligned with their
    whole tables."""
    off_ids = offline.transaction_ids[offline_rows]
    on_ids = stream.transaction_ids[stream_rows]
    position = {tid: i for i, tid in enumerate(on_ids)}
    pairs = [(i, position[tid]) for i, tid in enumerate(off_ids) if tid in position]
    off_index = np.array([p[0] for p in pairs], dtype=np.int64)
    on_index = np.array([p[1] for p in pairs], dtype=np.int64)
    a = offline.features[offline_rows][off_index]
    b = stream.features[stream_rows][on_index]
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    identical = same.all(axis=1)
    per_feature: dict[str, dict[str, float]] = {}
    for col, name in enumerate(FEATURE_NAMES):
        differs = ~same[:, col]
        if differs.any():
            per_feature[name] = {
                "rows": int(differs.sum()),
                "lower_online": int((b[differs, col] < a[differs, col]).sum()),
                "higher_online": int((b[differs, col] > a[differs, col]).sum()),
                "mean_offline_minus_online": round(
                    float(np.mean(a[differs, col] - b[differs, col])), 4
                ),
            }
    differing_ts = offline.event_ts[offline_rows][off_index][~identical]
    gap = np.abs(offline_scores[offline_rows][off_index] - stream_scores[stream_rows][on_index])
    return {
        "offline_rows": int(off_ids.size),
        "stream_rows": int(on_ids.size),
        "common_rows": len(pairs),
        "only_offline": int(off_ids.size - len(pairs)),
        "only_stream": int(on_ids.size - len(pairs)),
        "identical_feature_rows": int(identical.sum()),
        "differing_feature_rows": int((~identical).sum()),
        "differing_features": per_feature,
        "differing_first": iso(float(differing_ts.min())) if differing_ts.size else None,
        "differing_last": iso(float(differing_ts.max())) if differing_ts.size else None,
        "max_score_gap_identical_features": float(gap[identical].max()) if identical.any() else 0.0,
        "max_score_gap": float(gap.max()) if gap.size else 0.0,
    }
