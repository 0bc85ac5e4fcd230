"""The alerts dead-letter topic: invalid alerts and alerts no sink would take.

Headers say why (reason, field or sink and last error) and where the message came from
(source topic/partition/offset), so nothing is dropped and everything can be replayed.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from alerting.metrics import DEAD_LETTERED
from alerting.sinks import Notification, Outcome
from alerting.store import StoredAlert
from fraudcore.contracts import ContractError
from fraudcore.logs import kv, where

logger = logging.getLogger(__name__)


class DeadLetterError(RuntimeError):
    """The DLQ did not confirm a write: the batch must not be committed."""


Headers = list[tuple[str, str | bytes | None]]


def _headers(**fields: Any) -> Headers:
    return [(k, str(v).encode("utf-8")) for k, v in fields.items() if v is not None]


class DeadLetters:
    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def _produce(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, key=key, value=value, headers=headers, on_delivery=self._on_delivery
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # queue full: let it drain

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
            msg.key(),
            msg.value(),
            _headers(
                reason=error.reason,
                field=error.field or "",
                detail=error.detail,
                source_topic=topic,
                source_partition=partition,
                source_offset=offset,
            ),
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
        self._produce(
            alert.user_id.encode("utf-8"),
            alert.raw,
            _headers(
                reason="delivery_failed",
                sink=sink,
                kind=note.kind,
                count=note.count,
                attempts=outcome.attempts,
                last_error=outcome.error or "",
                alert_id=alert.alert_id,
                source_topic=alert.topic,
                source_partition=alert.partition,
                source_offset=alert.offset,
            ),
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
