"""`python -m trainer schedule`: the retrain service.

Every `--every` (TRAINER_RETRAIN_EVERY) it does what `train` does from the topics: reads
the newest TRAINER_RETRAIN_MAX_TRANSACTIONS transactions and the labels (chargebacks and
the analysts' verdicts from the review page, which alerting publishes to the same
topic), rebuilds the features, trains, evaluates on a matured holdout, registers, and
runs the promotion gate. The scorer follows the champion alias, so a promoted version is
hot-swapped with no restart.

A run that fails is logged and counted, and the next one comes at the next tick. SIGTERM
stops the wait between runs at once; a run under way is finished first (a kill is safe
too: the registry moves an alias only onto a complete version). Figures and decisions
are Prometheus metrics, prefixed trainer_, on TRAINER_METRICS_PORT.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow.tracking import MlflowClient
from prometheus_client import Counter, Gauge, start_http_server

from fraudcore.logs import kv
from trainer.models import NeedsLabelsError
from trainer.progress import Bars
from trainer.registry import champion_version
from trainer.runner import RunOptions, from_topics, run_training
from trainer.settings import ScheduleSettings, TrainerSettings
from trainer.timeutil import parse_duration

logger = logging.getLogger(__name__)

OUTCOMES = ("promoted", "kept_champion", "no_labels", "failed")
# The candidate's figures exported per run (keys of trainer.metrics.evaluate).
FIGURES = (
    "roc_auc",
    "average_precision",
    "card_precision_at_100",
    "precision_at_budget",
    "recall_at_budget",
    "alert_rate",
)

RUNS = Counter(
    "trainer_runs",
    "Scheduled retrains by outcome: promoted (the gate made it champion), kept_champion "
    "(it did not beat the champion), no_labels (no fraud labelled to train on), failed.",
    ["outcome"],
)
RUN_SECONDS = Gauge("trainer_run_seconds", "Wall time of the last retrain, seconds.")
LAST_RUN = Gauge(
    "trainer_last_run_timestamp_seconds",
    "When the last retrain ended, by its outcome.",
    ["outcome"],
)
LAST_FAILED = Gauge("trainer_last_run_failed", "1 when the last retrain raised an error.")
NEXT_RUN = Gauge("trainer_next_run_timestamp_seconds", "When the next retrain starts.")
INTERVAL = Gauge("trainer_retrain_interval_seconds", "Time between two retrains.")
CANDIDATE_FIGURE = Gauge(
    "trainer_candidate_figure",
    "The last candidate's figures on its holdout (roc_auc, average_precision, "
    "card_precision_at_100, precision_at_budget, recall_at_budget, alert_rate).",
    ["metric"],
)
GATE_FIGURE = Gauge(
    "trainer_gate_figure",
    "The gate's metric (average precision) on the last candidate's holdout, for the "
    "candidate and for the champion it was compared with.",
    ["role"],
)
LAST_VERSION = Gauge("trainer_last_version", "Registry version of the last candidate.")
CHAMPION_VERSION = Gauge(
    "trainer_champion_version", "Registry version the champion alias points at."
)
TRAINING_ROWS = Gauge(
    "trainer_training_rows", "Rows and frauds the last candidate was fitted on.", ["kind"]
)

for _outcome in OUTCOMES:
    RUNS.labels(_outcome)


def outcome_of(summary: dict[str, Any]) -> str:
    return "promoted" if summary.get("alias") == "champion" else "kept_champion"


def record(summary: dict[str, Any]) -> None:
    """Export one run's figures and gate decision."""
    figures = summary.get("metrics", {})
    for name in FIGURES:
        CANDIDATE_FIGURE.labels(name).set(figures.get(name, float("nan")))
    gate = summary.get("gate", {})
    for role in ("candidate", "champion"):
        value = gate.get(role)
        GATE_FIGURE.labels(role).set(float("nan") if value is None else value)
    if summary.get("version") is not None:
        LAST_VERSION.set(float(summary["version"]))
    TRAINING_ROWS.labels("rows").set(summary.get("train_rows", 0))
    TRAINING_ROWS.labels("frauds").set(summary.get("train_frauds", 0))


class RetrainSchedule:
    """Runs `retrain` every `every_s` until stopped; each run is one `train` from the
    topics with the gate."""

    def __init__(
        self,
        settings: ScheduleSettings,
        every_s: float,
        bars: Bars,
        retrain: Callable[[TrainerSettings, RunOptions, Bars], list[dict[str, Any]]] = run_training,
    ) -> None:
        self.settings = settings
        self.every_s = every_s
        self.bars = bars
        self._retrain = retrain
        self._stop = threading.Event()
        self.runs = 0

    def options(self) -> RunOptions:
        return from_topics(self.settings, self.settings.trainer_retrain_max_transactions)

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run_once(self) -> str:
        started = time.monotonic()
        try:
            summary = self._retrain(self.settings, self.options(), self.bars)[0]
        except NeedsLabelsError as exc:
            outcome = "no_labels"
            logger.warning("retrain skipped %s", kv(reason=exc))
        except Exception:  # one bad run must not stop the schedule: count it, try again
            outcome = "failed"
            logger.exception("retrain failed")
        else:
            outcome = outcome_of(summary)
            record(summary)
            logger.info(
                "retrain done %s",
                kv(
                    outcome=outcome,
                    version=summary.get("version"),
                    reason=summary.get("gate", {}).get("reason"),
                    average_precision=summary.get("metrics", {}).get("average_precision"),
                ),
            )
        RUNS.labels(outcome).inc()
        LAST_FAILED.set(outcome == "failed")
        LAST_RUN.labels(outcome).set(time.time())
        RUN_SECONDS.set(time.monotonic() - started)
        self._export_champion()
        self.runs += 1
        return outcome

    def _export_champion(self) -> None:
        uri = self.settings.mlflow_tracking_uri
        try:
            version = champion_version(MlflowClient(uri, uri), self.settings.model_name)
        except Exception as exc:  # the registry may be down; the next run tries again
            logger.warning("champion version unknown %s", kv(error=exc))
            return
        if version is not None:
            CHAMPION_VERSION.set(float(version))

    def serve(self, max_runs: int | None = None) -> None:
        """Wait a period, retrain, repeat; returns when stopped or after `max_runs`."""
        INTERVAL.set(self.every_s)
        self._export_champion()
        while max_runs is None or self.runs < max_runs:
            due = time.time() + self.every_s
            NEXT_RUN.set(due)
            logger.info("next retrain %s", kv(in_s=round(self.every_s)))
            if self._stop.wait(self.every_s):
                return
            self.run_once()
            if self._stop.is_set():
                return


def run_schedule(settings: ScheduleSettings, bars: Bars, max_runs: int | None) -> int:
    every_s = parse_duration(settings.trainer_retrain_every)
    schedule = RetrainSchedule(settings, every_s, bars)
    signal.signal(signal.SIGTERM, schedule.stop)
    signal.signal(signal.SIGINT, schedule.stop)
    # kill -USR1 <pid> prints every thread's stack (a run that hangs shows where).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    server, _thread = start_http_server(settings.trainer_metrics_port)
    logger.info("retrain schedule serving metrics %s", kv(port=server.server_port, every_s=every_s))
    try:
        schedule.serve(max_runs)
    finally:
        server.shutdown()
    return 0
