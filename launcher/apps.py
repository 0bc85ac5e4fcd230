"""The application services `up --profile stack` starts after the infrastructure.

One row per service: the package run with `python -m <name> <args>`, the setting in .env that
holds its HTTP port, the path that answers 200 once it is serving, whether it needs a
registered model (it then starts after the bootstrap), and the secrets it requires that
a local run may generate. Adding a service is adding a row (and a scrape target in
prometheus/prometheus.yml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fraudcore.settings import REPO_ROOT


@dataclass(frozen=True)
class AppService:
    name: str
    port_setting: str
    health_path: str
    needs_model: bool = False
    args: tuple[str, ...] = ()
    # Required variables without a default. When neither the environment nor .env sets
    # one, the launcher generates a random value, kept in the run folder (secrets.env).
    secrets: tuple[str, ...] = ()


APPS: tuple[AppService, ...] = (
    # The simulated population is busy enough for a live dashboard (2,000 cards x 50 a day,
    # about 1.2 transactions/s) and starts with a 2-day backfill at an hour per second
    # (~200k transactions in about a minute), so the bootstrap has data for a first model.
    AppService(
        "producer",
        "producer_metrics_port",
        "/metrics",
        args=("--speed", "3600", "--start", "now-2d", "--tx-per-user-day", "50"),
    ),
    AppService("alerting", "alerting_http_port", "/health", secrets=("ALERTING_API_KEY",)),
    AppService("scorer", "scorer_http_port", "/health", needs_model=True),
)


def missing_entry_point(package: str) -> str:
    """Why `python -m <package>` cannot run yet ("" when it can): other packages of the
    stack are written alongside the launcher and may not have an entry point yet."""
    entry: Path = REPO_ROOT / package / "__main__.py"
    return "" if entry.exists() else f"{entry.relative_to(REPO_ROOT)} does not exist yet"


# Runs once, to completion, after the apps without `needs_model` are healthy (the
# producer then fills the transactions topic it trains from) and before the others:
# trains and registers a first model when the registry has no champion.
# A day of the producer's backfill (about 100k transactions): the bootstrap warms the
# feature state on its first 12 hours and learns from the rest.
BOOTSTRAP = ("trainer", "bootstrap", "--min-transactions", "100000")
BOOTSTRAP_TIMEOUT_S = 900.0
