"""The application services `up --profile stack` starts after the infrastructure.

One row per service: the package run with `python -m <module> <args>` (the module is the
name unless said), the setting in .env that
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
    module: str = ""
    # It runs the simulated world: its arguments are world(cards) of the layout.
    simulates: bool = False

    @property
    def package(self) -> str:
        return self.module or self.name

    def arguments(self, cards: int) -> tuple[str, ...]:
        return world(cards) if self.simulates else self.args


# The simulated world `make up` starts: 2,000 cards paying 2.5 times a day (as the Fraud
# Detection Handbook's do), with the daily and weekly rhythm, a tenth of them issued along
# the way, 0.2 % fraud over the five scenarios (well under the 0.5 % alert budget, so the
# false alerts that fill the rest keep the share steady when fraud comes in bursts), and
# labels 1 to 8 days late (chargebacks).
# It begins with 70 days of history, produced as fast as it goes (~330k transactions and
# their labels in about a minute here), then runs live: 30 days fill the longest feature
# window, 8 more let the last labels of a test period arrive, and the 32 in between give
# the first model a training period, the 8-day label-delay gap and a test period.
HISTORY = "70d"
LABEL_DELAY, LABEL_JITTER, LONGEST_LABEL_DELAY = "1d", "7d", "8d"
WORLD_CARDS = 2000


def world(cards: int = WORLD_CARDS) -> tuple[str, ...]:
    """The producer's arguments for that world with `cards` cards (the end-to-end test
    runs a smaller one through the same path)."""
    return (
        "--users", str(cards), "--tx-per-user-day", "2.5", "--new-card-share", "0.1",
        "--fraud-rate", "0.002", "--label-delay", LABEL_DELAY, "--label-jitter", LABEL_JITTER,
        "--speed", "0", "--start", f"now-{HISTORY}",
    )  # fmt: skip


WORLD = world()

APPS: tuple[AppService, ...] = (
    AppService("producer", "producer_metrics_port", "/metrics", simulates=True),
    AppService("alerting", "alerting_http_port", "/health", secrets=("ALERTING_API_KEY",)),
    AppService("scorer", "scorer_http_port", "/health", needs_model=True),
    # Retrains from the topics once a day and promotes through the gate (trainer/schedule.py).
    AppService(
        "retrainer", "trainer_metrics_port", "/metrics", needs_model=True, module="trainer",
        args=("schedule", "--label-delay", LONGEST_LABEL_DELAY),
    ),
)  # fmt: skip


def missing_entry_point(package: str) -> str:
    """Why `python -m <package>` cannot run yet ("" when it can): other packages of the
    stack are written alongside the launcher and may not have an entry point yet."""
    entry: Path = REPO_ROOT / package / "__main__.py"
    return "" if entry.exists() else f"{entry.relative_to(REPO_ROOT)} does not exist yet"


# Runs once, to completion, after the apps without `needs_model` are healthy (the
# producer then fills the transactions topic it trains from) and before the others:
# trains and registers a first model when the registry has no champion.
# The bootstrap waits until the producer's history has reached the present, then learns a
# supervised model from it (its first 30 days only warm the feature state).
def bootstrap(cards: int = WORLD_CARDS) -> tuple[str, ...]:
    """The bootstrap's command for world(cards): it waits for 50 transactions a card, the
    first three weeks of the history, and then for the backfill to reach the present."""
    return (
        "trainer", "bootstrap", "--min-transactions", str(50 * cards),
        "--label-delay", LONGEST_LABEL_DELAY,
    )  # fmt: skip


BOOTSTRAP = bootstrap()
BOOTSTRAP_TIMEOUT_S = 900.0
