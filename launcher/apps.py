"""The application services `up --profile stack` starts after the infrastructure.

One row per service: the package run with `python -m <name>`, the setting in .env that
holds its HTTP port and the path that answers 200 once it is serving. Adding a service
is adding a row (and a scrape target in prometheus/prometheus.yml).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AppService:
    name: str
    port_setting: str
    health_path: str


APPS: tuple[AppService, ...] = (
    AppService("producer", "producer_metrics_port", "/metrics"),
    AppService("scorer", "scorer_http_port", "/health"),
    AppService("alerting", "alerting_http_port", "/health"),
)

# Run once, to completion, before the apps start: trains and registers a first model when
# the registry has none, so the scorer has a champion to load.
BOOTSTRAP = ("trainer", "bootstrap")
BOOTSTRAP_TIMEOUT_S = 900.0
