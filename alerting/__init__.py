"""Alerting service: consumes explained alerts, stores each once, routes them to sinks
(log, webhook, Slack) with retries, suppression and a dead-letter topic, and serves an
API plus a review page whose analyst verdicts become labels."""
