"""`bootstrap`: make sure the registry has a champion, quickly.

Runs from the launcher after the producer started: if a champion exists it does nothing;
otherwise it waits (bounded, logged) until the transactions topic holds enough data, then
trains from the topics like `train` does. Isolation forest needs no labels; a supervised
kind asked for without labelled fraud falls back to it, because a first model now beats
no model (the next `train` with labels replaces it through the gate).
"""

from __future__ import annotations

import logging
import time

from mlflow.tracking import MlflowClient

from fraudcore.kafka import wait_for_kafka
from fraudcore.logs import kv
from trainer import kafka_source
from trainer.models import ModelConfig, NeedsLabelsError
from trainer.progress import Bars
from trainer.registry import champion_version, wait_for_mlflow
from trainer.runner import RunOptions, from_topics, run_training
from trainer.settings import ModelKind, TrainerSettings

logger = logging.getLogger(__name__)
# Fewer than this after the wait: too little to fit anything meaningful, give up.
MIN_USEFUL = 200
# A topic whose newest transaction is this recent holds its backfill up to the present.
CAUGHT_UP_S = 3600.0


def wait_for_transactions(settings: TrainerSettings, wanted: int, wait_s: float) -> int:
    """Wait (bounded) until the topic holds `wanted` transactions and its backfill is
    done: the newest event within CAUGHT_UP_S of now, or no new transaction since the
    last look (at night the simulated card holders sleep, and the newest event may be
    hours old once the producer has caught up). The launcher's producer first fills
    weeks of history, as fast as it can; the first model must see all of it."""
    config = settings.client_config()
    deadline = time.monotonic() + wait_s
    previous = -1
    while True:
        count = kafka_source.message_count(config, settings.topic_transactions)
        newest = kafka_source.newest_event_time(config, settings.topic_transactions)
        behind_s = None if newest is None else max(0.0, time.time() - newest)
        done = (behind_s is not None and behind_s <= CAUGHT_UP_S) or count == previous
        if (count >= wanted and done) or time.monotonic() >= deadline:
            return count
        previous = count
        logger.info(
            "waiting for transactions %s",
            kv(
                topic=settings.topic_transactions,
                have=count,
                want=wanted,
                newest_behind_h=None if behind_s is None else round(behind_s / 3600, 1),
                left_s=round(deadline - time.monotonic()),
            ),
        )
        time.sleep(min(5.0, max(0.5, deadline - time.monotonic())))


def run_bootstrap(settings: TrainerSettings, kind: ModelKind | None, bars: Bars) -> int:
    started = time.monotonic()
    uri = settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    wait_for_mlflow(client, settings.trainer_startup_timeout_s)
    current = champion_version(client, settings.model_name)
    if current is not None:
        logger.info(
            "champion exists, nothing to do %s", kv(model=settings.model_name, version=current)
        )
        return 0
    wait_for_kafka(settings.client_config(), settings.trainer_startup_timeout_s)
    wanted = settings.trainer_bootstrap_min_transactions
    count = wait_for_transactions(settings, wanted, settings.trainer_bootstrap_wait_s)
    if count < min(wanted, MIN_USEFUL):
        logger.error("too few transactions to bootstrap %s", kv(have=count, want=wanted))
        return 1
    if count < wanted:
        logger.warning("bootstrapping on fewer transactions %s", kv(have=count, want=wanted))
    options = from_topics(settings, settings.trainer_bootstrap_max_transactions, kind)
    config = options.configs[0]
    try:
        summaries = run_training(settings, options, bars)
    except NeedsLabelsError as exc:
        logger.warning("no labels yet, bootstrapping an isolation forest %s", kv(reason=exc))
        fallback = ModelConfig("isolation_forest", config.seed, config.alert_budget)
        summaries = run_training(
            settings, RunOptions(options.data, options.split, [fallback]), bars
        )
    logger.info(
        "bootstrap done %s",
        kv(
            version=summaries[0].get("version"),
            alias=summaries[0].get("alias"),
            seconds=round(time.monotonic() - started, 1),
        ),
    )
    return 0
