"""One training run: data -> feature table -> holdout -> model -> figures (-> MLflow)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fraudcore.logs import kv
from fraudcore.model import FraudModel
from fraudcore.offline import OfflineFeatureBuilder
from trainer import kafka_source
from trainer.dataset import FeatureTable, add_labels, build_table, fingerprint
from trainer.holdout import Holdout, Split, auto_holdout, book_holdout, make_split
from trainer.labels import LabelBook
from trainer.metrics import evaluate
from trainer.models import ModelConfig, budget_threshold, fit_model
from trainer.progress import Bars
from trainer.sources import Event, FileStats, Preset, read_file
from trainer.timeutil import iso

logger = logging.getLogger(__name__)

# The test period sets the threshold only if it expects this many alerts at the budget:
# fewer, and one alert more or less moves the threshold far.
MIN_EXPECTED_ALERTS = 10

SplitKind = Literal["auto", "book"]


@dataclass(frozen=True)
class DataRequest:
    """Where the training data comes from and which event-time range is read."""

    path: Path | None = None  # None: the Kafka topics
    preset: Preset = "auto"
    since: float | None = None
    until: float | None = None
    label_delay_s: float = 7 * 86400.0
    # Kafka only: read just the newest `tail` messages of each topic (bootstrap's bound).
    tail: int | None = None

    def describe(self) -> str:
        return f"file:{self.path}" if self.path else "kafka"


@dataclass(frozen=True)
class SplitRequest:
    kind: SplitKind = "auto"
    test_fraction: float = 0.25
    gap_s: float | None = None  # None: the label delay
    warmup_s: float = 0.0
    # How long before the newest data the test period ends: None, the label delay (its
    # frauds' labels are known by then); 0 for a source whose labels are all known.
    mature_s: float | None = None
    book_train_days: int = 7  # kind="book": training days ending 2018-07-31


@dataclass
class DataReport:
    source: str
    transactions: int = 0
    labels: int = 0
    fraud_labels: int = 0
    invalid_transactions: Counter[str] = field(default_factory=Counter)
    invalid_labels: Counter[str] = field(default_factory=Counter)
    out_of_range: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "transactions": self.transactions,
            "labels": self.labels,
            "fraud_labels": self.fraud_labels,
            "invalid_transactions": sum(self.invalid_transactions.values()),
            "invalid_labels": sum(self.invalid_labels.values()),
            "invalid_reasons": dict(self.invalid_transactions + self.invalid_labels),
            "out_of_range": self.out_of_range,
            "feature_seconds": round(self.seconds, 2),
        }


def load_table(
    request: DataRequest, kafka_config: dict[str, Any] | None, topics: tuple[str, str], bars: Bars
) -> tuple[FeatureTable, DataReport]:
    """Read the source and build the point-in-time feature table."""
    started = time.perf_counter()
    report = DataReport(request.describe())
    book = LabelBook()
    builder = OfflineFeatureBuilder()
    if request.path is not None:
        stats = FileStats()
        size = request.path.stat().st_size
        with bars.task(f"features from {request.path.name}", total=size, unit="bytes") as task:
            events: Iterator[Event] = read_file(
                request.path,
                preset=request.preset,
                label_delay_s=request.label_delay_s,
                since=request.since,
                until=request.until,
                stats=stats,
                on_progress=task.set,
            )
            table = build_table(events, labels=book, builder=builder)
        report.transactions = stats.transactions
        report.out_of_range = stats.out_of_range
        report.invalid_transactions = stats.invalid or Counter()
    else:
        if kafka_config is None:
            raise ValueError("no Kafka configuration to read the topics with")
        tx_topic, label_topic = topics
        total_labels = _expected(kafka_source.message_count(kafka_config, label_topic), request)
        with bars.task(f"reading {label_topic}", total=total_labels) as task:
            labels, label_stats = kafka_source.read_labels(
                kafka_config, label_topic, tail=request.tail, on_progress=task.set
            )
        add_labels(builder, book, labels)
        report.invalid_labels = label_stats.invalid
        total_tx = _expected(kafka_source.message_count(kafka_config, tx_topic), request)
        with bars.task(f"reading {tx_topic}", total=total_tx) as task:
            merged, count, tx_stats = kafka_source.read_transactions(
                kafka_config,
                tx_topic,
                since=request.since,
                until=request.until,
                tail=request.tail,
                on_progress=task.set,
            )
        with bars.task("building features", total=count) as task:
            table = build_table(merged, labels=book, builder=builder, on_row=task.set)
        report.transactions = count
        report.out_of_range = tx_stats.out_of_range
        report.invalid_transactions = tx_stats.invalid
    report.labels = book.count
    report.fraud_labels = book.frauds
    report.seconds = time.perf_counter() - started
    logger.info("feature table built %s", kv(**report.summary()))
    return table, report


def _expected(count: int, request: DataRequest) -> int:
    return count if request.tail is None else min(count, request.tail)


def choose_holdout(table: FeatureTable, split: SplitRequest, label_delay_s: float) -> Holdout:
    if split.kind == "book":
        return book_holdout(split.book_train_days)
    if len(table) < 2:
        raise ValueError(f"only {len(table)} valid transactions: not enough to train")
    gap = label_delay_s if split.gap_s is None else split.gap_s
    first, last = float(table.event_ts.min()), float(table.event_ts.max())
    warmup = split.warmup_s
    if warmup > (last - first) / 2:
        logger.warning(
            "data span too short for the warm-up, training without it %s",
            kv(span_s=round(last - first), warmup_s=warmup),
        )
        warmup = 0.0
    mature = label_delay_s if split.mature_s is None else split.mature_s
    return auto_holdout(
        first, last, test_fraction=split.test_fraction, gap_s=gap, warmup_s=warmup, mature_s=mature
    )


@dataclass
class Outcome:
    model: FraudModel
    config: ModelConfig
    split: Split
    test_features: np.ndarray
    test_scores: np.ndarray
    metrics: dict[str, float]
    fingerprint: str
    train_seconds: float


def train_on(
    table: FeatureTable,
    split: Split,
    config: ModelConfig,
    *,
    label_delay_s: float,
    source: str,
) -> Outcome:
    """Fit on the training period, evaluate on the test period."""
    holdout = split.holdout
    train_x = table.features[split.train_rows]
    if train_x.shape[0] < 2:
        raise ValueError(f"the training period has {train_x.shape[0]} rows: not enough to train")
    started = time.perf_counter()
    digest = fingerprint(
        train_x, split.train_targets, iso(holdout.train_start), iso(holdout.train_end)
    )
    metadata = {
        "training_range": [iso(holdout.train_start), iso(holdout.train_end)],
        "holdout": holdout.describe(),
        "data_fingerprint": digest,
        "label_delay_s": label_delay_s,
        "source": source,
        "training_rows": int(train_x.shape[0]),
        "training_frauds": int(split.train_targets.sum()),
    }
    model = fit_model(train_x, split.train_targets, config, metadata)
    train_seconds = time.perf_counter() - started
    test_x = table.features[split.test_rows]
    scores = model.score(test_x)
    recalibrate_threshold(model, scores, config.alert_budget, holdout)
    scenarios = table.labels.scenarios(table.transaction_ids[split.test_rows])
    figures = evaluate(
        scores,
        split.test_targets,
        table.event_ts[split.test_rows],
        table.user_ids[split.test_rows],
        model.threshold,
        scenarios,
    )
    figures["train_seconds"] = train_seconds
    logger.info(
        "evaluated %s", kv(kind=config.kind, **{k: round(v, 4) for k, v in figures.items()})
    )
    return Outcome(model, config, split, test_x, scores, figures, digest, train_seconds)


def recalibrate_threshold(
    model: FraudModel, recent_scores: np.ndarray, budget: float, holdout: Holdout
) -> None:
    """Set the threshold on the most recent traffic, the test period, instead of the
    training rows: a model scores the rows it was fitted on higher than new ones (a
    boosted model's training scores crowd at the top), so a threshold taken there alerts
    on a share of live traffic far from the budget. It is a share of the scores, chosen
    without looking at any label; the run logs both thresholds."""
    model.metadata["threshold_on_training"] = model.threshold
    if recent_scores.size * budget < MIN_EXPECTED_ALERTS:
        model.metadata["threshold_from"] = "training period (test period too small)"
        return
    model.threshold = budget_threshold(recent_scores, budget)
    model.metadata["threshold_from"] = (
        f"test period {iso(holdout.test_start)}..{iso(holdout.test_end)}"
    )


def holdout_split(table: FeatureTable, split: SplitRequest, label_delay_s: float) -> Split:
    return make_split(table, choose_holdout(table, split, label_delay_s))
