"""Settings of the producer (environment first, then the root .env)."""

from __future__ import annotations

from pydantic import Field

from fraudcore.settings import KafkaSettings, TopicSettings


class ProducerSettings(KafkaSettings, TopicSettings):
    producer_metrics_port: int = Field(ge=0, le=65535)
    transactions_partitions: int = Field(ge=1)
    # Bounded start-up wait for Kafka, and how long Kafka may stay unreachable mid-run
    # before the process gives up and exits non-zero (a supervisor restarts it).
    producer_startup_timeout_s: float = Field(default=60.0, gt=0)
    producer_dependency_timeout_s: float = Field(default=120.0, gt=0)
