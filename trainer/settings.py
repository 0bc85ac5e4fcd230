"""Settings of the trainer (environment first, then the root .env)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fraudcore.settings import KafkaSettings, TopicSettings

ModelKind = Literal["isolation_forest", "hist_gb", "ensemble"]


class TrainerSettings(KafkaSettings, TopicSettings):
    mlflow_tracking_uri: str
    model_name: str
    # The model kind `train` and `bootstrap` fit unless --model says otherwise; bootstrap
    # falls back to the isolation forest only where no fraud is labelled yet.
    trainer_model: ModelKind = "hist_gb"
    trainer_experiment: str = "fraud-trainer"
    trainer_seed: int = 42
    # Share of transactions that should raise an alert (the threshold is set to meet it).
    trainer_alert_budget: float = Field(default=0.005, gt=0, lt=1)
    # How long after a transaction its label is taken to be known, when a source does not
    # say (files without an availability column; the holdout gap when labels are absent).
    trainer_label_delay: str = "7d"
    trainer_startup_timeout_s: float = Field(default=60.0, gt=0)
    # bootstrap: wait (bounded) for this many transactions on the topic before training.
    trainer_bootstrap_min_transactions: int = Field(default=3000, ge=1)
    # It also waits until the newest transaction is within an hour of now: the
    # launcher's producer first backfills weeks of history, which takes a minute or two.
    trainer_bootstrap_wait_s: float = Field(default=300.0, ge=0)
    # bootstrap reads at most the newest this many transactions (and labels): a topic that
    # grew for days must not make the first model slow.
    trainer_bootstrap_max_transactions: int = Field(default=1_000_000, ge=100)
    # The first stretch of the data only warms the feature state (train and bootstrap):
    # its rows see windows not yet full, unlike every transaction after it; 30 days fill
    # the longest window. Data shorter than twice this trains without a warm-up (warned).
    trainer_warmup: str = "30d"


class ScheduleSettings(TrainerSettings):
    """`schedule`, the retrain service: the trainer's settings plus its own."""

    trainer_metrics_port: int
    # Time between two retrains (the first comes one period after the start).
    trainer_retrain_every: str = "1d"
    # A retrain reads at most the newest this many transactions (and their labels).
    trainer_retrain_max_transactions: int = Field(default=1_000_000, ge=100)
