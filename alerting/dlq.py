"""The alerts dead-letter topic: invalid alerts and alerts no sink would take.

Each dead letter is what fraudcore/dead_letter.py defines for every service: the message
as consumed, headers saying why (`dlq.reason`, `dlq.field`, `dlq.detail`; for a delivery
failure also `dlq.sink`, `dlq.kind`, `dlq.count`, `dlq.attempts`, `dlq.last_error`,
`dlq.alert_id`) and where it came from (`dlq.source.*`), truncated and marked when it
would not fit the topic. Nothing is dropped and everything can be replayed.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, Message, Producer

from alerting.metrics import DEAD_LETTERED
from alerting.sinks import Notification, Outcome
from alerting.store import StoredAlert
from fraudcore.contracts import ContractError
from fraudcore.dead_letter import DeadLetter, build, dead_letter
from fraudcore.kafka import produce_waiting
from fraudcore.logs import kv, where

logger = logging.getLogger(__name__)


class DeadLetterError(RuntimeError):
    """The DLQ did not confirm a write: the batch must not be committed."""


class DeadLetters:
    def __init__(self, producer: Producer, topic: str, limit: int) -> None:
        self.producer = producer
        self.topic = topic
        # Bytes a dead letter may have in all (fraudcore.dead_letter.dead_letter_limit).
        self.limit = limit
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def _produce(self, letter: DeadLetter) -> None:
        """A letter is cut to fit the topic, so a produce error other than a full queue is
        the producer's: raised, and the batch is not committed."""
        produce_waiting(self.producer, *letter, on_delivery=self._on_delivery)

    def invalid(self, msg: Message, error: ContractError) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        logger.warning(
            "invalid alert dead-lettered %s",
            kv(
                at=where(str(topic), int(partition or 0), int(offset or 0)),
                reason=error.reason,
                field=error.field,
                detail=error.detail,
            ),
        )
        self._produce(
            dead_letter(msg, self.topic, error.reason, error.detail, error.field, limit=self.limit)
        )
        DEAD_LETTERED.labels(error.reason).inc()

    def undeliverable(
        self, alert: StoredAlert, note: Notification, sink: str, outcome: Outcome
    ) -> None:
        logger.error(
            "delivery failed, dead-lettered %s",
            kv(
                alert_id=alert.alert_id,
                sink=sink,
                kind=note.kind,
                attempts=outcome.attempts,
                error=outcome.error,
            ),
        )
        extra = [
            ("sink", sink),
            ("kind", note.kind),
            ("count", str(note.count)),
            ("attempts", str(outcome.attempts)),
            ("last_error", outcome.error or ""),
            ("alert_id", alert.alert_id),
        ]
        self._produce(
            build(
                self.topic,
                alert.user_id.encode("utf-8"),
                alert.raw,
                [],
                (alert.topic, alert.partition, alert.offset),
                "delivery_failed",
                f"{sink}: {outcome.error or 'no attempt succeeded'}",
                extra=extra,
                limit=self.limit,
            )
        )
        DEAD_LETTERED.labels("delivery_failed").inc()

    def flush(self, timeout_s: float) -> None:
        """Wait until every dead letter so far is acknowledged by Kafka."""
        remaining = self.producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeadLetterError(
                f"{remaining} dead letters unconfirmed, {len(failures)} failed: {failures[:3]}"
            )
