"""Scorer settings: addresses and topics from the root .env, tuning with defaults."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field

from fraudcore.settings import KafkaSettings, TopicSettings


class ScorerSettings(KafkaSettings, TopicSettings):
    redis_url: str
    mlflow_tracking_uri: str
    model_name: str
    scorer_http_port: int

    scorer_group_id: str = "scorer"
    scorer_labels_group_id: str = "scorer-labels"
    # At start, the labels already published are folded before scoring begins, for at
    # most this long: a scorer catching up on history then sees each merchant's fraud
    # reports as they were at each transaction's time, as the trainer did.
    scorer_labels_catch_up_s: float = Field(default=120.0, ge=0)
    # Stable per instance: a restarted instance fences its own zombie (Kafka EOS).
    scorer_instance_id: str = Field(default_factory=socket.gethostname)
    # Micro-batches: whichever comes first, the size or the wait, which counts from when
    # the batch before was taken (what arrived while it was scored has waited already).
    # Small waits keep p99 latency low at low rates; large batches amortise the Redis
    # round trip and the Kafka commit at high ones.
    scorer_batch_max_size: int = Field(default=1000, ge=1, le=100_000)
    scorer_batch_max_wait_ms: int = Field(default=10, ge=0, le=10_000)
    # A batch at least this large stays in flight (Redis reads its state) while the batch
    # before it is finished; a smaller one is finished at once, because waiting in flight
    # costs it one more batch of latency. Since the user features left Redis, only full
    # batches (draining a backlog) gain from it: two A/B pairs at 5,000 tx/s (batches of
    # 250-400), 250 against never: p50 228/166 -> 99/144 ms, p99 506/603 -> 231/440 ms.
    scorer_overlap_min_batch: int = Field(default=1000, ge=1)
    # The broker answers a fetch once it has this many bytes or the batch wait is over:
    # fewer, fuller fetches. 64 KB against 1 byte, two A/B pairs at 5,000 tx/s: broker CPU
    # 0.54-0.56 -> 0.51-0.52 of a core, p99 484/848 -> 286/448 ms; at 1,000 tx/s no change.
    scorer_fetch_min_bytes: int = Field(default=65_536, ge=1, le=52_428_800)
    scorer_emit_scores: bool = True
    # Hold back a partition that is a UTC day ahead of another of this process's
    # partitions with input left, so that merchant counts of earlier days are complete
    # while a backlog is drained (scorer/alignment.py).
    scorer_align_days: bool = True
    # exactly_once: outputs and offsets in one Kafka transaction. at_least_once: an
    # idempotent producer, flushed, then a synchronous offset commit (a crash between the
    # two repeats outputs downstream); kept to measure what exactly-once costs.
    scorer_delivery: Literal["exactly_once", "at_least_once"] = "exactly_once"
    scorer_model_alias: str = "champion"
    scorer_model_poll_s: float = Field(default=10.0, gt=0)
    scorer_feature_key_prefix: str = "fx"
    # On a Redis Cluster (REDIS_URL redis+cluster://...): replicas of each master that
    # must hold a batch's state writes before its Kafka commit (WAIT), so a failover
    # cannot lose confirmed state. 0 on one Redis, which has no replica to wait for.
    scorer_redis_replica_acks: int = Field(default=0, ge=0, le=5)
    scorer_feature_ttl_s: int = Field(default=35 * 86400, gt=0)
    # At most 256 KB: an alert carries its transaction, and every output must stay far
    # under the producer's 1 MB (a larger transaction is dead-lettered as oversized).
    scorer_max_message_bytes: int = Field(default=16_384, gt=0, le=262_144)
    scorer_max_future_s: float = Field(default=86_400.0, ge=0)
    # How long Redis or Kafka may be gone before the process exits non-zero so that a
    # supervisor restarts it (must stay below max.poll.interval.ms).
    scorer_max_outage_s: float = Field(default=120.0, gt=0)
    # No progress (no batch committed while input waits) for this long: /ready turns
    # false; SCORER_MAX_OUTAGE_S + 15 s: the watchdog exits (code 5). scorer/watchdog.py.
    scorer_stall_timeout_s: float = Field(default=30.0, gt=0)
    scorer_startup_timeout_s: float = Field(default=60.0, gt=0)
    scorer_transaction_timeout_ms: int = Field(default=60_000, ge=1000)
    # How soon the group notices a dead instance (static members do not leave on stop).
    scorer_session_timeout_ms: int = Field(default=10_000, ge=1000)

    @property
    def transactional_id(self) -> str:
        return f"{self.scorer_group_id}-{self.scorer_instance_id}"
