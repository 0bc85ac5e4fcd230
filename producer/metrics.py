"""Prometheus metrics of the producer (all prefixed producer_), served on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server
from prometheus_client.registry import REGISTRY, CollectorRegistry

STREAMS = ("transactions", "labels", "dlq")  # what the producer writes, as a metric label

TRANSACTIONS = Counter(
    "producer_transactions",
    "Transactions produced (handed to the Kafka client), by fraud scenario; 'legit' for legit.",
    ["scenario"],
)
LABELS = Counter("producer_labels", "Labels produced, by label (fraud, legit).", ["label"])
DELIVERED = Counter(
    "producer_delivered",
    "Messages acknowledged by Kafka, by stream (transactions, labels, dlq).",
    ["stream"],
)
DELIVERY_FAILURES = Counter(
    "producer_delivery_failures",
    "Messages Kafka did not acknowledge after the client's retries, by stream.",
    ["stream"],
)
VALIDATION_FAILURES = Counter(
    "producer_validation_failures",
    "Records rejected by their contract and never produced, by source (simulator, replay) "
    "and reason.",
    ["source", "reason"],
)
DEAD_LETTERED = Counter(
    "producer_dead_lettered", "Replay rows written to the transactions DLQ, by reason.", ["reason"]
)
SKIPPED_ROWS = Counter(
    "producer_replay_rows_skipped", "Replay rows outside the --since/--until range."
)
EVENT_TIME_LAG = Gauge(
    "producer_event_time_lag_seconds",
    "Wall clock minus the event time of the last transaction produced (large for a backfill "
    "or a replay, about 0 in real time).",
)
PENDING_LABELS = Gauge(
    "producer_pending_labels", "Labels held back until the event time reaches available_at."
)

# Children created up front: a dashboard shows 0 rather than "no data" before any event.
for _stream in STREAMS:
    DELIVERED.labels(_stream)
    DELIVERY_FAILURES.labels(_stream)
for _label in ("fraud", "legit"):
    LABELS.labels(_label)


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> tuple[object, int]:
    """Serve /metrics on `port` (0: any free port); returns (server, bound port)."""
    server, _thread = start_http_server(port, registry=registry)
    return server, int(server.server_port)
