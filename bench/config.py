"""Where the stack is (environment first, then the root .env) and what a run measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fraudcore.settings import KafkaSettings


class BenchSettings(KafkaSettings):
    redis_url: str
    mlflow_tracking_uri: str


@dataclass(frozen=True)
class Stack:
    kafka_bootstrap: str
    redis_url: str
    mlflow_uri: str

    @classmethod
    def from_settings(cls, settings: BenchSettings) -> Stack:
        return cls(
            settings.kafka_bootstrap_servers, settings.redis_url, settings.mlflow_tracking_uri
        )

    @property
    def kafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.kafka_bootstrap}


@dataclass(frozen=True)
class Plan:
    """Sizes of one run. The defaults are the published measurement; the smoke test
    shrinks everything."""

    # Drain: one month of handbook-like traffic, pre-filled, then consumed by one scorer.
    # "handbook" (falls back to synthetic when the file is missing) or "synthetic".
    source: str = "handbook"
    month_start: str = "2018-07-01"
    days: int = 31
    drain_limit: int | None = None  # cap on transactions (None: the whole slice)
    partitions: int = 6
    # An unmeasured exactly-once drain first: a broker JVM started just before compiles
    # its transaction and fetch paths during its first drain, which costs it twice the CPU
    # per transaction of every drain after (measured on this machine); production brokers
    # run warm. The warm-up is reported beside the others, never as a target.
    warm_up: bool = True
    # Variants of the drain: delivery modes, and exactly-once without the scores topic.
    modes: tuple[str, ...] = ("exactly_once", "at_least_once")
    no_scores_variant: bool = True
    # Redis memory is also measured on the plain handbook columns (what the lead measured).
    plain_memory: bool = True
    # Open-loop latency: offered loads (tx/s), warm-up and measured seconds per level.
    loads: tuple[int, ...] = (1000, 2500, 5000, 10000)
    warmup_s: float = 10.0
    measure_s: float = 40.0
    load_users: int = 200_000
    load_merchants: int = 20_000
    # The at-least-once latency is measured at these loads (empty: not measured).
    alo_latency_loads: tuple[int, ...] = (1000, 5000)
    # Naive baseline: at most this many messages or seconds, whichever first.
    naive_messages: int = 3000
    naive_seconds: float = 60.0
    # Model: IsolationForest fitted on the slice before the drain month.
    train_days: int = 14
    train_limit: int | None = None
    trees: int = 150
    scorer_env: dict[str, str] = field(default_factory=dict)
    # Before each measurement, wait up to settle_s for a 1-minute load average below
    # settle_below (0: do not wait). Other work on a shared machine skews every figure.
    settle_below: float = 0.0
    settle_s: float = 300.0
