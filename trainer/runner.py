"""Glue for the commands: build the table once, fit each requested model, publish."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fraudcore.logs import kv
from trainer.holdout import Holdout, make_split
from trainer.models import ModelConfig
from trainer.pipeline import DataRequest, SplitRequest, holdout_split, load_table, train_on
from trainer.progress import Bars
from trainer.settings import ModelKind, TrainerSettings
from trainer.timeutil import parse_duration

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    data: DataRequest
    split: SplitRequest
    configs: list[ModelConfig] = field(default_factory=lambda: [ModelConfig()])
    register: bool = True


def from_topics(settings: TrainerSettings, tail: int, kind: ModelKind | None = None) -> RunOptions:
    """A run on the newest `tail` transactions of the topics, as the settings say: their
    model kind (unless `kind`), label delay and warm-up. The bootstrap's and the retrain
    service's runs."""
    config = ModelConfig(
        kind=kind or settings.trainer_model,
        seed=settings.trainer_seed,
        alert_budget=settings.trainer_alert_budget,
    )
    data = DataRequest(label_delay_s=parse_duration(settings.trainer_label_delay), tail=tail)
    return RunOptions(
        data, SplitRequest(warmup_s=parse_duration(settings.trainer_warmup)), [config]
    )


def run_training(
    settings: TrainerSettings, options: RunOptions, bars: Bars
) -> list[dict[str, Any]]:
    """Returns one summary per model config (figures, timings, version and alias)."""
    kafka = None if options.data.path is not None else settings.client_config()
    if kafka is not None:
        from fraudcore.kafka import wait_for_kafka

        wait_for_kafka(kafka, settings.trainer_startup_timeout_s)
    table, report = load_table(
        options.data, kafka, (settings.topic_transactions, settings.topic_labels), bars
    )
    split = holdout_split(table, options.split, options.data.label_delay_s)
    test_cards = table.user_ids[split.test_rows]
    test_ts = table.event_ts[split.test_rows]
    scenarios = table.labels.scenarios(table.transaction_ids[split.test_rows])
    summaries = []
    for config in options.configs:
        outcome = train_on(
            table,
            split,
            config,
            label_delay_s=options.data.label_delay_s,
            source=report.source,
        )
        summary: dict[str, Any] = {
            "model_kind": config.kind,
            "params": config.params(),
            "holdout": split.holdout.describe(),
            "train_rows": int(split.train_rows.size),
            "train_frauds": int(split.train_targets.sum()),
            "test_rows": int(split.test_rows.size),
            "test_frauds": int(split.test_targets.sum()),
            "excluded_known_compromised": split.excluded_known_compromised,
            "data": report.summary(),
            "fingerprint": outcome.fingerprint,
            "metrics": {k: v for k, v in outcome.metrics.items() if np.isfinite(v)},
        }
        if options.register:
            from trainer.publish import publish

            published = publish(
                outcome,
                report,
                tracking_uri=settings.mlflow_tracking_uri,
                experiment=settings.trainer_experiment,
                model_name=settings.model_name,
                startup_timeout_s=settings.trainer_startup_timeout_s,
                test_cards=test_cards,
                test_ts=test_ts,
                scenarios=scenarios,
            )
            summary.update(
                run_id=published.run_id,
                version=published.version,
                alias=published.alias,
                gate=published.decision.__dict__,
                champion_metrics=published.champion_metrics,
            )
            logger.info("run published %s", kv(version=published.version, alias=published.alias))
        summaries.append(summary)
    return summaries


def run_folds(options: RunOptions, holdouts: list[Holdout], bars: Bars) -> list[dict[str, Any]]:
    """Mean figures of each config over several holdouts of one feature table (for tuning
    on validation periods, so the test period is never looked at)."""
    table, report = load_table(options.data, None, ("", ""), bars)
    splits = [make_split(table, holdout) for holdout in holdouts]
    summaries = []
    for config in options.configs:
        per_fold = [
            train_on(
                table, split, config, label_delay_s=options.data.label_delay_s, source=report.source
            ).metrics
            for split in splits
        ]
        keys = sorted(set.intersection(*(set(m) for m in per_fold)))
        summaries.append(
            {
                "model_kind": config.kind,
                "params": config.params(),
                "folds": [h.describe() for h in holdouts],
                "metrics": {k: float(np.mean([m[k] for m in per_fold])) for k in keys},
                "per_fold": per_fold,
            }
        )
    return summaries
