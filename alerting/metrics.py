"""Prometheus metrics of the alerting service (all prefixed alerting_)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECEIVED = Counter("alerting_alerts_received", "Alert messages consumed from the alerts topic.")
STORED = Counter("alerting_alerts_stored", "Alerts stored for the first time (by alert_id).")
DELIVERED = Counter(
    "alerting_alerts_delivered", "Notifications delivered, by sink and kind.", ["sink", "kind"]
)
FAILED = Counter(
    "alerting_alerts_failed",
    "Notifications that failed for good (attempts exhausted or rejected), by sink.",
    ["sink"],
)
RETRIES = Counter(
    "alerting_delivery_retries", "Delivery attempts that failed and were retried.", ["sink"]
)
DEAD_LETTERED = Counter(
    "alerting_alerts_dead_lettered", "Messages sent to the alerts DLQ, by reason.", ["reason"]
)
UNROUTED = Counter(
    "alerting_alerts_unrouted",
    "Alerts stored but sent to no sink: no route matched (e.g. too old for max_age_seconds).",
)
SUPPRESSED = Counter(
    "alerting_alerts_suppressed", "Alerts folded into a suppression window, by sink.", ["sink"]
)
FEEDBACK = Counter("alerting_feedback", "Analyst verdicts published as labels.", ["label"])
DELIVERY_LATENCY = Histogram(
    "alerting_delivery_latency_seconds",
    "Seconds from the alert's processed_at (scorer) to its delivery, by sink.",
    ["sink"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
