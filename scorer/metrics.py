"""The scorer's Prometheus metrics (names are used by the dashboards and alert rules)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector


class BatchHistogram(Collector):
    """A histogram observed a whole batch at a time (one numpy call for a thousand
    values instead of a thousand `Histogram.observe` calls, ~1 µs each). Exposed exactly
    like a prometheus_client Histogram of the same name, buckets and labels."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], label: str | None = None
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self.label = label
        self._lock = threading.Lock()
        self._series: dict[str, tuple[np.ndarray, list[float]]] = {}
        if label is None:
            self._series[""] = self._empty()
        REGISTRY.register(self)

    def _empty(self) -> tuple[np.ndarray, list[float]]:
        return np.zeros(len(self.bounds) + 1, dtype=np.int64), [0.0]

    def observe_many(self, values: np.ndarray, label_value: str = "") -> None:
        # side="left": a value equal to a bound belongs to that bucket (le is inclusive).
        counts = np.bincount(
            np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1
        )
        total = float(np.sum(values))
        with self._lock:
            series = self._series.get(label_value)
            if series is None:
                series = self._series[label_value] = self._empty()
            series[0][:] += counts
            series[1][0] += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=[self.label] if self.label else None
        )
        with self._lock:
            snapshot = [(k, c.copy(), t[0]) for k, (c, t) in self._series.items()]
        for label_value, counts, total in snapshot:
            cumulative = np.cumsum(counts).tolist()
            buckets = [(_le(b), c) for b, c in zip(self.bounds.tolist(), cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            family.add_metric([label_value] if self.label else [], buckets, total)
        yield family


def _le(bound: float) -> str:
    # The same text prometheus_client writes for a bucket bound (0.5 -> "0.5", 1 -> "1.0").
    return repr(float(bound))


STAGES = ("decode", "features", "model", "produce", "commit")

consumed = Counter("scorer_transactions_consumed_total", "Transactions read from Kafka")
scored = Counter("scorer_transactions_scored_total", "Transactions scored and committed")
alerted = Counter("scorer_alerts_total", "Alerts committed", ["severity", "model_version"])
dead_lettered = Counter("scorer_dlq_total", "Messages sent to a dead-letter topic", ["reason"])
unknown_fields = Counter(
    "scorer_unknown_fields_total", "Transactions carrying fields the contract does not know"
)
batch_size = Histogram(
    "scorer_batch_size",
    "Messages per micro-batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
stage_seconds = Histogram(
    "scorer_stage_seconds",
    "Time per batch in each stage",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
event_to_commit = BatchHistogram(
    "scorer_event_to_commit_seconds",
    "End-to-end latency: transaction event time to committed score",
    LATENCY_BUCKETS,
)
ingest_to_commit = BatchHistogram(
    "scorer_ingest_to_commit_seconds",
    "Kafka message timestamp (producer create time) to committed score",
    LATENCY_BUCKETS,
)
consumer_lag = Gauge(
    "scorer_consumer_lag",
    "Log end minus the group's committed offset, per partition this instance owns",
    ["topic", "partition"],
)
score_distribution = BatchHistogram(
    "scorer_score",
    "Scores produced",
    (*(i / 20 for i in range(1, 20)), 0.99, 0.995, 0.999),
    label="model_version",
)
model_version = Gauge(
    "scorer_model_version", "Version of the model in use (0 = none)", ["model_name"]
)
partitions_held = Gauge(
    "scorer_partitions_held",
    "Partitions paused while a UTC day ahead of another with input left (scorer/alignment.py)",
)
model_loaded = Gauge("scorer_model_loaded", "1 when a model is loaded and scoring")
alert_budget = Gauge(
    "scorer_alert_budget",
    "Share of transactions the model in use was set to alert on (its version's alert budget)",
)
model_load_failures = Counter("scorer_model_load_failures_total", "Failed model loads or polls")
model_last_loaded = Gauge(
    "scorer_model_loaded_timestamp_seconds", "When the model in use was loaded"
)
redis_errors = Counter("scorer_redis_errors_total", "Redis calls that failed (then retried)")
user_state_conflicts = Counter(
    "scorer_user_state_conflicts_total",
    "Batches computed again because another scorer wrote one of their users meanwhile",
)
user_states_reset = Counter(
    "scorer_user_states_reset_total",
    "User states found in another format or feature set, or corrupt, and started afresh",
    ["kind"],
)
kafka_errors = Counter("scorer_kafka_errors_total", "Kafka errors by class", ["kind"])
transactions_aborted = Counter(
    "scorer_kafka_transactions_aborted_total", "Aborted Kafka transactions"
)
labels_folded = Counter(
    "scorer_labels_folded_total", "Labels folded into merchant state", ["label"]
)
ready = Gauge("scorer_ready", "1 when Kafka, Redis and a model are available and batches progress")
last_progress = Gauge(
    "scorer_last_progress_timestamp_seconds",
    "When the loop last committed a batch or found nothing to do (scorer/watchdog.py)",
)
feature_psi = Gauge(
    "scorer_feature_psi",
    "Population stability index of a feature against the model's training distribution",
    ["feature"],
)
