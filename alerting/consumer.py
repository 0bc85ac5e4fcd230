"""The consumer loop: alerts topic -> validate -> store once -> deliver -> commit.

Offsets are committed only after every alert of a batch is delivered, suppressed or
dead-lettered (and the dead letters are acknowledged), so a crash re-reads the batch and
the recorded delivery states make the re-read cheap and silent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from sqlalchemy.exc import OperationalError

from alerting.delivery import Dispatcher
from alerting.dlq import DeadLetters
from alerting.metrics import RECEIVED, STORED
from alerting.settings import AlertingSettings
from alerting.store import AlertStore, StoredAlert
from fraudcore.contracts import ContractError, decode_record, parse_time
from fraudcore.kafka import consume_available, consumer_config
from fraudcore.logs import kv

logger = logging.getLogger(__name__)

T = TypeVar("T")

SUMMARY_CHECK_EVERY_S = 1.0
KAFKA_PROBE_EVERY_S = 5.0
_CONNECTIVITY_ERRORS = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
_STALE_COMMIT_ERRORS = frozenset(
    {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}
)


class DependencyLost(RuntimeError):
    """Kafka or the database stayed unreachable past the dependency timeout."""


def decode_alert(raw: bytes | None) -> tuple[dict[str, Any], float, float]:
    """Bytes from the alerts topic -> (alert, event time, processed_at) in epoch seconds."""
    record = decode_record(raw, "alerts")
    return (
        record,
        parse_time(record["event_time"], "event_time"),
        parse_time(record["processed_at"], "processed_at"),
    )


class AlertConsumer:
    def __init__(
        self,
        settings: AlertingSettings,
        store: AlertStore,
        dispatcher: Dispatcher,
        dead_letters: DeadLetters,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.dead_letters = dead_letters
        self.stop = stop
        self.assigned: set[tuple[str, int]] = set()
        self._kafka_down_since: float | None = None
        self._last_probe = 0.0
        self._last_summary_check = 0.0

    def run(self) -> None:
        s = self.settings
        consumer = Consumer(
            consumer_config(
                s.client_config(),
                s.alerting_group_id,
                **{
                    "session.timeout.ms": s.alerting_session_timeout_ms,
                    "max.poll.interval.ms": s.alerting_max_poll_interval_ms,
                },
            )
        )
        consumer.subscribe([s.topic_alerts], on_assign=self._on_assign, on_revoke=self._on_revoke)
        logger.info("consuming %s", kv(topic=s.topic_alerts, group=s.alerting_group_id))
        try:
            while not self.stop.is_set():
                messages = consume_available(
                    consumer, s.alerting_batch_size, s.alerting_poll_timeout_s
                )
                if messages and self._handle(messages):
                    self._commit(consumer)
                self._watch_kafka(consumer)
                self._summaries()
        finally:
            consumer.close()
            logger.info("consumer closed")

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        logger.info("partitions assigned %s", kv(partitions=[p.partition for p in partitions]))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        logger.info("partitions revoked %s", kv(partitions=[p.partition for p in partitions]))

    def _handle(self, messages: list[Message]) -> bool:
        """Process one batch; True when it may be committed."""
        batch: list[StoredAlert] = []
        invalid = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            self._kafka_down_since = None
            RECEIVED.inc()
            try:
                record, event_ts, processed_ts = decode_alert(msg.value())
            except ContractError as exc:
                self.dead_letters.invalid(msg, exc)
                invalid += 1
                continue
            batch.append(
                StoredAlert(
                    record=record,
                    raw=msg.value() or b"",
                    event_ts=event_ts,
                    processed_ts=processed_ts,
                    topic=str(msg.topic()),
                    partition=int(msg.partition() or 0),
                    offset=int(msg.offset() or 0),
                )
            )
        if invalid:
            self.dead_letters.flush(30.0)
        new = self._retry_db(lambda: self.store.insert_alerts(batch))
        STORED.inc(len(new))
        complete = self._retry_db(lambda: self.dispatcher.deliver(batch))
        if not complete:
            logger.info("batch interrupted by shutdown, not committed %s", kv(size=len(batch)))
        return complete

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)
        if err.code() in _CONNECTIVITY_ERRORS:
            if self._kafka_down_since is None:
                self._kafka_down_since = time.monotonic()
            logger.warning("kafka unreachable %s", kv(error=err.str()))
        elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            logger.warning("alerts topic missing %s", kv(error=err.str()))
        else:
            # Retriable or informational: librdkafka recovers on its own.
            logger.warning("consumer error %s", kv(code=err.name(), error=err.str()))

    def _commit(self, consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError._NO_OFFSET:
                return
            if code in _STALE_COMMIT_ERRORS:
                # The partitions moved: the next owner re-reads the batch and skips what
                # the database says is done.
                logger.warning("commit lost to a rebalance %s", kv(error=exc))
                return
            raise

    def _watch_kafka(self, consumer: Consumer) -> None:
        since = self._kafka_down_since
        if since is None:
            return
        now = time.monotonic()
        if now - self._last_probe >= KAFKA_PROBE_EVERY_S:
            self._last_probe = now
            try:
                consumer.list_topics(timeout=2.0)
                logger.info("kafka reachable again")
                self._kafka_down_since = None
                return
            except KafkaException:
                pass
        down_for = now - since
        if down_for > self.settings.alerting_dependency_timeout_s:
            raise DependencyLost(f"Kafka unreachable for {down_for:.0f}s")

    def _summaries(self) -> None:
        now = time.monotonic()
        if self.stop.is_set() or now - self._last_summary_check < SUMMARY_CHECK_EVERY_S:
            return
        self._last_summary_check = now
        self._retry_db(self.dispatcher.deliver_due_summaries)

    def _retry_db(self, work: Callable[[], T]) -> T:
        """Run `work`, retrying while the database is unreachable (it is idempotent)."""
        deadline = time.monotonic() + self.settings.alerting_dependency_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return work()
            except OperationalError as exc:  # connection lost, refused, locked; not a bug
                if time.monotonic() >= deadline:
                    raise DependencyLost(f"database unreachable: {exc.orig}") from exc
                logger.warning("database error, retrying %s", kv(attempt=attempt, error=exc.orig))
                if self.stop.wait(min(5.0, 0.2 * 2**attempt)):
                    raise
