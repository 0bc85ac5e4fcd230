"""The scorer's consume-transform-produce loop, exactly once.

Where a message enters: `Scorer.run` consumes `transactions` in micro-batches and
`_intake` decodes them and sends their feature requests to Redis. Where it leaves:
`_finish` scores the batch and hands its outputs to the `Checkpoint`
(scorer/checkpoint.py), which confirms the batch's Redis state, then commits scores,
alerts, dead letters and the consumed offsets in one Kafka transaction, in the background
while the next batch is scored, or rewinds the consumer if any of it failed. Meanwhile
Redis already computes the features of the batch after that. The Redis update is
idempotent per transaction_id (a replay after an abort or a crash computes the same vector
and changes nothing), so a crash at any point loses nothing and doubles nothing.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fraudcore import merchant, user_kernel
from fraudcore.contracts import format_time
from fraudcore.dead_letter import FRAMING_BYTES, PRODUCER_MAX_MESSAGE_BYTES, dead_letter_limit
from fraudcore.kafka import consumer_config, producer_config, wait_for_kafka
from fraudcore.logs import kv, where
from scorer import metrics
from scorer.alignment import DayAlignment, left_for_later
from scorer.checkpoint import Checkpoint, KafkaHooks, Offsets
from scorer.drift import DriftTracker
from scorer.feature_pipeline import FeaturePipeline, PendingFeatures
from scorer.feature_store import FeatureStore, SourcePosition, UserStateConflict
from scorer.lag import LagProbe
from scorer.model_manager import LoadedModel, ModelManager
from scorer.pipeline import Accepted, Rejected, dead_letter, decode_batch, outputs
from scorer.routed_features import RoutedFeatures
from scorer.settings import ScorerSettings
from scorer.slot_routing import SlotRouter, cluster_seeds
from scorer.watchdog import Watchdog

logger = logging.getLogger(__name__)
# The next transaction's AddOffsetsToTxn meets CONCURRENT_TRANSACTIONS while the broker
# still writes the previous commit's markers; librdkafka retries it after retry.backoff.ms
# (100 ms by default, growing exponentially up to retry.backoff.max.ms on repeats).
# Measured (a consume-produce-commit loop on 1,000 tx/s of live input, 40 s runs):
# send_offsets_to_transaction peaked at 117-128 ms with 100 ms, 29-54 ms with 2-10 ms.
TXN_RETRY_BACKOFF_MS = 5

EXIT_OUTAGE = 3
EXIT_FATAL = 4
# The watchdog's exit comes this long after the outage limit: where the loop still turns,
# its own orderly exit (EXIT_OUTAGE, with the dependency named) comes first.
STALL_EXIT_MARGIN_S = 15.0
LAG_PROBE_INTERVAL_S = 5.0
# A commit still running this long past its transaction's timeout is stuck (transactions.py).
COMMIT_DEADLINE_MARGIN_S = 5.0


class OutageError(RuntimeError):
    """A dependency was gone for longer than the configured limit."""


@dataclass
class Health:
    kafka: bool = False
    redis: bool = False
    stopping: bool = False
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class Scored:
    """What is left to record of a batch once its outputs are committed."""

    batch: Batch
    scores: np.ndarray
    severities: list[str]
    version: str
    features_s: float
    model_s: float


@dataclass
class Batch:
    """A micro-batch between `_intake` and `_finish`: decoded, features requested."""

    offsets: Offsets = field(default_factory=Offsets)
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    pending: PendingFeatures | None = None
    decode_s: float = 0.0
    submit_s: float = 0.0


class Outage:
    """Tracks how long a dependency has been failing, with capped exponential backoff."""

    def __init__(self, name: str, limit_s: float) -> None:
        self.name = name
        self.limit_s = limit_s
        self.since: float | None = None
        self.attempt = 0

    def failed(self, error: object) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self.attempt += 1
        down_for = now - self.since
        logger.warning(
            "dependency failing %s",
            kv(dependency=self.name, attempt=self.attempt, down_s=round(down_for, 1), error=error),
        )
        if down_for > self.limit_s:
            raise OutageError(
                f"{self.name} unavailable for {down_for:.0f}s (limit {self.limit_s:.0f}s)"
            )
        time.sleep(min(2.0, 0.05 * 2**self.attempt))

    def recovered(self) -> None:
        if self.since is not None:
            logger.info(
                "dependency back %s",
                kv(dependency=self.name, down_s=round(time.monotonic() - self.since, 1)),
            )
        self.since = None
        self.attempt = 0


class Scorer:
    def __init__(self, settings: ScorerSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.health = Health()
        # A Redis Cluster (REDIS_URL redis+cluster://...) is reached through a SlotRouter,
        # made once a node answers (connect); one Redis through this client.
        self.cluster_seeds = cluster_seeds(settings.redis_url)
        self.redis = None if self.cluster_seeds else redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=10
        )  # fmt: skip
        self.store: FeatureStore | None = None
        self.models = ModelManager(
            settings.mlflow_tracking_uri,
            settings.model_name,
            settings.scorer_model_alias,
            settings.scorer_model_poll_s,
        )
        self.drift: DriftTracker | None = None
        self._drift_version: str | None = None
        self._redis_outage = Outage("redis", settings.scorer_max_outage_s)
        self._kafka_outage = Outage("kafka", settings.scorer_max_outage_s)
        self._last_psi_export = 0.0
        self.exactly_once = settings.scorer_delivery == "exactly_once"
        # One batch at a time is in flight: its features are being computed in Redis
        # while the batch before it is scored and committed.
        self._in_flight: Batch | None = None
        self._features_pipeline: FeaturePipeline | RoutedFeatures | None = None
        self.checkpoint: Checkpoint | None = None  # made with the Kafka clients
        self.alignment: DayAlignment | None = None  # made with the consumer
        # Bytes a dead letter may have (fraudcore/dead_letter.py); read from the topic.
        self._dlq_limit = PRODUCER_MAX_MESSAGE_BYTES - FRAMING_BYTES
        self.watchdog = Watchdog(
            settings.scorer_stall_timeout_s,
            max(
                settings.scorer_stall_timeout_s, settings.scorer_max_outage_s + STALL_EXIT_MARGIN_S
            ),
        )
        self.lag = LagProbe(
            settings.client_config(), settings.scorer_group_id, LAG_PROBE_INTERVAL_S
        )
        metrics.ready.set_function(lambda: float(self.ready))

    # ------------------------------------------------------------------ start-up
    def connect(self) -> None:
        """Bounded, logged waits for Kafka and Redis; raises TimeoutError."""
        timeout = self.settings.scorer_startup_timeout_s
        wait_for_kafka(self.settings.client_config(), timeout)
        self.health.kafka = True
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                target: redis.Redis | SlotRouter
                if self.cluster_seeds:
                    target = SlotRouter(self.cluster_seeds, socket_timeout_s=5)
                else:
                    assert self.redis is not None
                    self.redis.ping()
                    target = self.redis
                break
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Redis not reachable after {timeout:.0f}s: {exc}") from exc
                logger.info("waiting for redis %s", kv(attempt=attempt, error=exc))
                time.sleep(min(2.0, 0.2 * attempt))
        self.store = FeatureStore(
            target,
            self.settings.scorer_feature_key_prefix,
            self.settings.scorer_feature_ttl_s,
            replica_acks=self.settings.scorer_redis_replica_acks,
        )
        self.health.redis = True
        logger.info("redis reachable %s", kv(attempt=attempt))
        took = user_kernel.warm_up() + merchant.warm_up()
        logger.info("feature kernels ready %s", kv(took_s=f"{took:.1f}"))

    @property
    def ready(self) -> bool:
        return (
            self.health.kafka
            and self.health.redis
            and self.models.current is not None
            and not self.health.stopping
            and not self.watchdog.stalled
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Returns the process exit code."""
        settings = self.settings
        base = settings.client_config()
        if self.store is None:
            self.connect()
        self.models.start()
        while not self.models.wait_ready(5.0):
            if self.stop.is_set():
                return 0
            logger.info(
                "not ready: waiting for a model %s",
                kv(model=settings.model_name, alias=settings.scorer_model_alias,
                   reason=self.models.last_error),
            )  # fmt: skip
        self._dlq_limit = dead_letter_limit(AdminClient(base), settings.topic_transactions_dlq)
        producer_extra: dict[str, Any] = {"linger.ms": 2}
        if self.exactly_once:
            producer_extra["transactional.id"] = settings.transactional_id
            producer_extra["transaction.timeout.ms"] = settings.scorer_transaction_timeout_ms
            producer_extra["retry.backoff.ms"] = TXN_RETRY_BACKOFF_MS
        producer = Producer(producer_config(base, **producer_extra))
        consumer = Consumer(
            consumer_config(
                base,
                settings.scorer_group_id,
                **{
                    "partition.assignment.strategy": "cooperative-sticky",
                    # Static membership: a restarted instance takes its partitions back at
                    # once instead of waiting for its dead predecessor's session to expire.
                    "group.instance.id": settings.scorer_instance_id,
                    "session.timeout.ms": settings.scorer_session_timeout_ms,
                    "max.poll.interval.ms": int(settings.scorer_max_outage_s * 1000) + 60_000,
                    "fetch.wait.max.ms": max(1, settings.scorer_batch_max_wait_ms),
                    "fetch.min.bytes": settings.scorer_fetch_min_bytes,
                },
            )
        )
        alignment = self.alignment = DayAlignment(consumer, settings.scorer_align_days)
        checkpoint = self.checkpoint = Checkpoint(
            consumer,
            producer,
            exactly_once=self.exactly_once,
            timeout_s=settings.scorer_startup_timeout_s,
            transaction_deadline_s=settings.scorer_transaction_timeout_ms / 1000
            + COMMIT_DEADLINE_MARGIN_S,
            kafka=KafkaHooks(self._on_commit_retriable, self._kafka_recovered),
        )
        try:
            self.watchdog.start()  # init_transactions is a broker call like any other
            checkpoint.begin()
            consumer.subscribe(
                [settings.topic_transactions], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            logger.info(
                "scoring %s",
                kv(topic=settings.topic_transactions, group=settings.scorer_group_id,
                   delivery=settings.scorer_delivery, transactional_id=settings.transactional_id),
            )  # fmt: skip
            self.lag.start()
            _freeze_heap()
            wait_s = settings.scorer_batch_max_wait_ms / 1000
            taken_at = time.monotonic()
            while not self.stop.is_set():
                # A batch closes at most wait_s after the one before was taken: what
                # arrived while that one was scored has waited already. (consume() waits
                # its whole timeout unless the batch fills, so a fixed wait idled ~10 ms
                # in every cycle at 5,000 tx/s.) With a batch in flight, only take what
                # has already arrived: waiting would hold back the batch in flight.
                timeout = 0.0 if self._in_flight else taken_at + wait_s - time.monotonic()
                alignment.release()
                msgs = consumer.consume(settings.scorer_batch_max_size, max(0.0, timeout))
                taken_at = time.monotonic()
                self._step(msgs)
                if not msgs and self._in_flight is None and not checkpoint.pending:
                    self.watchdog.progressed()  # nothing to do
            if self._in_flight is not None:
                self._finish(self._in_flight)
                self._in_flight = None
            checkpoint.settle()
            return 0
        except OutageError as exc:
            logger.error("giving up, a supervisor should restart us %s", kv(error=exc))
            return EXIT_OUTAGE
        except KafkaException as exc:
            logger.error("fatal kafka error %s", kv(error=exc.args[0]))
            return EXIT_FATAL
        finally:
            self.health.stopping = True
            self.models.stop()
            self.lag.close()
            self._discard_in_flight()
            checkpoint.close()
            consumer.close()
            producer.flush(5)
            # Only now: a close that hangs is a stall too.
            self.watchdog.close()
            logger.info("scorer stopped")

    def _step(self, msgs: list[Message]) -> None:
        """Take in the new batch, finish the one in flight; the new one stays in flight
        only if it is large enough to gain from overlapping with Redis."""
        assert self.checkpoint is not None
        self.checkpoint.new_consume()
        batch = self._intake(msgs) if msgs else None
        previous, self._in_flight = self._in_flight, batch
        if previous is not None and not self._finish(previous):
            if batch is not None:
                # The batch before was rewound: the one taken in after it is void too.
                self.checkpoint.rewind(batch.offsets)
                self._discard_in_flight()
            return
        if batch is not None and len(msgs) < self.settings.scorer_overlap_min_batch:
            self._in_flight = None
            self._finish(batch)
        elif previous is None and batch is None:
            # Idle: settle the last commit now rather than with the next batch, so its
            # metrics are current and an abort is retried at once.
            self.checkpoint.settle()

    def _intake(self, msgs: list[Message]) -> Batch | None:
        """Check, decode and send a batch's feature requests to Redis; the rest of the
        batch happens in `_finish`, while Redis works."""
        settings = self.settings
        started = time.perf_counter()
        batch = Batch()
        data: list[Message] = []
        for msg in msgs:
            error = msg.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            data.append(msg)
        if not data:
            return None
        self._kafka_outage.recovered()
        self.health.kafka = True

        accepted, rejected, with_unknown = decode_batch(
            data, settings.scorer_max_message_bytes, settings.scorer_max_future_s, time.time()
        )
        assert self.alignment is not None
        batch.accepted, batch.rejected, held = self.alignment.admit(accepted, rejected)
        if held:
            data = [msg for msg in data if not left_for_later(msg, held)]
            if not data:
                return None
        for msg in data:
            batch.offsets.add(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        metrics.consumed.inc(len(data))
        metrics.batch_size.observe(len(data))
        if with_unknown:
            metrics.unknown_fields.inc(with_unknown)
        t_decode = time.perf_counter()
        batch.pending = self._pipeline().submit(
            [a.tx for a in batch.accepted],
            [
                SourcePosition(f"{a.msg.topic()}:{a.msg.partition()}", a.msg.offset() or 0)
                for a in batch.accepted
            ],
        )
        batch.decode_s = t_decode - started
        batch.submit_s = time.perf_counter() - t_decode
        return batch

    def _finish(self, batch: Batch) -> bool:
        """Features, model, outputs and the commit of a batch taken in by `_intake`.
        False if it was rewound (it will be consumed again)."""
        settings = self.settings
        started = time.perf_counter()
        accepted, rejected = batch.accepted, batch.rejected
        features = self._features(batch)
        t_features = time.perf_counter()

        loaded = self.models.current
        assert loaded is not None  # run() waits for a model before consuming
        scores = loaded.score(features)
        self._track_drift(loaded, features)
        out, severities = outputs(
            accepted,
            features,
            scores,
            threshold=loaded.threshold,
            explainer=loaded.explainer,
            model_name=loaded.name,
            model_version=loaded.version,
            scores_topic=settings.topic_scores,
            alerts_topic=settings.topic_alerts,
            emit_scores=settings.scorer_emit_scores,
            processed_at=format_time(time.time()),
        )
        out += [dead_letter(r, settings.topic_transactions_dlq, self._dlq_limit) for r in rejected]
        t_model = time.perf_counter()
        scored = Scored(
            batch, scores, severities, loaded.version,
            batch.submit_s + (t_features - started), t_model - t_features,
        )  # fmt: skip
        assert self.checkpoint is not None
        return self.checkpoint.commit(
            batch.offsets, out, partial(self._confirm_writes, batch), partial(self._record, scored)
        )

    def _on_commit_retriable(self, error: KafkaError) -> None:
        """A retriable Kafka error (on the commit thread, exactly once); gives up past the
        outage limit."""
        self.health.kafka = False
        self._kafka_outage.failed(error)

    def _kafka_recovered(self) -> None:
        self._kafka_outage.recovered()
        self.health.kafka = True

    def _record(
        self, scored: Scored, committed_at: float, confirm_s: float, commit_s: float
    ) -> None:
        """Metrics and logs of a committed batch."""
        batch = scored.batch
        accepted, rejected = batch.accepted, batch.rejected
        metrics.stage_seconds.labels("decode").observe(batch.decode_s)
        metrics.stage_seconds.labels("features").observe(scored.features_s + confirm_s)
        metrics.stage_seconds.labels("model").observe(scored.model_s)
        metrics.stage_seconds.labels("commit").observe(commit_s)
        metrics.scored.inc(len(accepted))
        self.watchdog.progressed()
        for level in scored.severities:
            metrics.alerted.labels(level, scored.version).inc()
        for reject in rejected:
            metrics.dead_lettered.labels(reject.error.reason).inc()
            msg = reject.msg
            logger.info(
                "dead-lettered %s",
                kv(at=where(msg.topic() or "", msg.partition() or 0, msg.offset() or 0),
                   reason=reject.error.reason, field=reject.error.field, detail=reject.error.detail),
            )  # fmt: skip
        if accepted:
            metrics.event_to_commit.observe_many(
                committed_at - np.fromiter((a.event_ts for a in accepted), float, len(accepted))
            )
            metrics.ingest_to_commit.observe_many(
                committed_at
                - np.fromiter((a.msg.timestamp()[1] for a in accepted), float, len(accepted)) / 1000
            )
            metrics.score_distribution.observe_many(scored.scores, scored.version)

    def _pipeline(self) -> FeaturePipeline | RoutedFeatures:
        if self._features_pipeline is None:
            assert self.store is not None
            if self.store.router is not None:
                self._features_pipeline = RoutedFeatures(self.store)
            else:
                self._features_pipeline = FeaturePipeline(self.store)
        return self._features_pipeline

    def _features(self, batch: Batch) -> Any:
        assert batch.pending is not None
        while True:
            try:
                result = self._pipeline().result(batch.pending)
                self._redis_outage.recovered()
                self.health.redis = True
                return result
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                metrics.redis_errors.inc()
                self.health.redis = False
                self._redis_outage.failed(exc)

    def _confirm_writes(self, batch: Batch) -> bool:
        """Whether Redis took the batch's user states; if not (another process wrote
        some of its users, or the answer was lost) the batch must be computed again."""
        assert batch.pending is not None
        try:
            self._pipeline().confirm(batch.pending)
            return True
        except UserStateConflict as exc:
            metrics.user_state_conflicts.inc()
            logger.warning(
                "user state written by another scorer, computing the batch again %s",
                kv(users=len(exc.users), user_id=exc.users[0]),
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            metrics.redis_errors.inc()
            self.health.redis = False
            self._redis_outage.failed(exc)
        return False

    def _discard_in_flight(self) -> None:
        self._in_flight = None
        if self._features_pipeline is not None:
            self._features_pipeline.discard()

    # ------------------------------------------------------------------ callbacks
    def _on_consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        metrics.kafka_errors.labels("consume").inc()
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.health.kafka = False
            self._kafka_outage.failed(error)
        else:
            logger.warning("consume error %s", kv(error=error))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.lag.assigned(partitions)
        if self.alignment is not None:
            self.alignment.assigned(partitions)
        logger.info(
            "partitions assigned %s", kv(partitions=",".join(str(p.partition) for p in partitions))
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The batch in flight may hold messages of these partitions: commit it while they
        # are still ours (the batch after it is not consumed yet).
        if self.checkpoint is not None:
            self.checkpoint.new_consume()
            if self._in_flight is not None:
                batch, self._in_flight = self._in_flight, None
                if not self._finish(batch):
                    self._discard_in_flight()
            self.checkpoint.settle()
        if self.store is not None:
            # The partitions' next owner writes their users from now on.
            self.store.forget_written()
        if self.alignment is not None:
            self.alignment.forget(partitions)
        logger.info(
            "partitions revoked %s", kv(partitions=",".join(str(p.partition) for p in partitions))
        )
        self.lag.revoked(partitions)

    def _track_drift(self, loaded: LoadedModel, features: Any) -> None:
        if self._drift_version != loaded.version:
            if self._drift_version is not None:
                _freeze_heap()  # the new model's objects join the frozen start-up heap
            self.drift = DriftTracker(loaded.model)
            self._drift_version = loaded.version
        assert self.drift is not None
        self.drift.update(features)
        now = time.monotonic()
        if now - self._last_psi_export > 10:
            self._last_psi_export = now
            for name, value in self.drift.psi().items():
                metrics.feature_psi.labels(name).set(value)


def _freeze_heap() -> None:
    """Move what start-up built (modules, the model: ~250k objects) out of the garbage
    collector's reach. A full collection otherwise walks all of it, ~170 ms of CPU, a
    pause longer than the latency target, every few hundred thousand allocations."""
    gc.collect()
    gc.freeze()
