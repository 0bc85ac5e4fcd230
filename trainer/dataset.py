"""Feature table: every transaction of a stream with its point-in-time feature vector.

Built with fraudcore.offline.OfflineFeatureBuilder, which runs the scorer's feature
arithmetic over state in memory. Labels go to the builder with their available_at, so a
label can only influence transactions at or after the time it became known.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from fraudcore.features import TxnInput
from fraudcore.offline import OfflineFeatureBuilder
from trainer.labels import Label, LabelBook
from trainer.sources import Event

logger = logging.getLogger(__name__)

_CHUNK = 65_536


@dataclass
class FeatureTable:
    features: np.ndarray  # (rows, len(FEATURE_NAMES)), NaN = missing
    event_ts: np.ndarray  # epoch seconds
    transaction_ids: np.ndarray  # object (str)
    user_ids: np.ndarray  # object (str)
    labels: LabelBook

    def __len__(self) -> int:
        return int(self.event_ts.shape[0])

    def between(self, start: float, end: float) -> np.ndarray:
        """Row indices with start <= event time < end."""
        return np.flatnonzero((self.event_ts >= start) & (self.event_ts < end))


def build_table(
    events: Iterable[Event],
    *,
    labels: LabelBook | None = None,
    builder: OfflineFeatureBuilder | None = None,
    on_row: Callable[[int], None] | None = None,
) -> FeatureTable:
    """Feed events in order; a Label is folded in, a Transaction becomes a row."""
    book = labels if labels is not None else LabelBook()
    builder = builder if builder is not None else OfflineFeatureBuilder()
    chunks: list[np.ndarray] = []
    pending: list[TxnInput] = []
    times: list[float] = []
    tx_ids: list[str] = []
    users: list[str] = []

    def flush() -> None:
        chunks.append(builder.compute(pending))
        pending.clear()
        if on_row is not None:
            on_row(len(times))

    for event in events:
        if isinstance(event, Label):
            # Order-free: a label counts by its available_at, whenever it is added.
            builder.add_label(
                event.merchant_id, event.transaction_id, event.label, event.available_ts
            )
            book.add(event)
            continue
        record, event_ts = event
        pending.append(TxnInput.from_record(record, event_ts))
        times.append(event_ts)
        tx_ids.append(record["transaction_id"])
        users.append(record["user_id"])
        if len(pending) == _CHUNK:
            flush()
    flush()
    return FeatureTable(
        features=np.concatenate(chunks),
        event_ts=np.array(times, dtype=np.float64),
        transaction_ids=np.array(tx_ids, dtype=object),
        user_ids=np.array(users, dtype=object),
        labels=book,
    )


def add_labels(builder: OfflineFeatureBuilder, book: LabelBook, labels: Iterable[Label]) -> None:
    for label in labels:
        builder.add_label(label.merchant_id, label.transaction_id, label.label, label.available_ts)
        book.add(label)


def fingerprint(features: np.ndarray, targets: np.ndarray, *context: str) -> str:
    """sha256 over the feature matrix (NaN made canonical), the targets and the context."""
    digest = hashlib.sha256()
    canonical = np.where(np.isnan(features), np.float64(np.nan), features)
    digest.update(np.ascontiguousarray(canonical, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(targets, dtype="<i1").tobytes())
    for part in context:
        digest.update(part.encode())
    return digest.hexdigest()
