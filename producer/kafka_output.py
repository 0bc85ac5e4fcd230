"""The Kafka side: one idempotent, acks=all producer for transactions, labels and the DLQ,
with delivery callbacks counting what Kafka acknowledged."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from fraudcore.kafka import producer_config
from fraudcore.logs import kv
from producer import metrics
from producer.metrics import STREAMS

logger = logging.getLogger(__name__)

# Log the first failures of a kind, then one in this many, so an outage cannot flood the log.
LOG_EVERY = 1000


class KafkaUnavailable(RuntimeError):
    """Kafka failed for good (a fatal client error, or unreachable for too long)."""


class Stopped(Exception):
    """A stop was requested while waiting for room in the producer queue."""


@dataclass(frozen=True)
class Topics:
    transactions: str
    labels: str
    dlq: str

    def of(self, stream: str) -> str:
        topic: str = getattr(self, stream)
        return topic


class KafkaOutput:
    def __init__(
        self,
        client_config: dict[str, Any],
        topics: Topics,
        stop: threading.Event,
        unavailable_after_s: float,
    ) -> None:
        self.topics = topics
        self.stop = stop
        self.unavailable_after_s = unavailable_after_s
        self.producer = Producer(producer_config(client_config, error_cb=self._on_error))
        self.delivered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.fatal: KafkaError | None = None
        self.down_since: float | None = None
        self._callbacks = {s: functools.partial(self._on_delivery, s) for s in STREAMS}
        self._topic = {s: topics.of(s) for s in STREAMS}
        self._delivered_metric = {s: metrics.DELIVERED.labels(s) for s in STREAMS}

    def send(
        self,
        stream: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        *,
        interruptible: bool = True,
    ) -> None:
        """Queue a message; while the queue is full, wait (raising Stopped on a stop
        request if interruptible, KafkaUnavailable if Kafka is gone)."""
        while True:
            try:
                self.producer.produce(
                    self._topic[stream],
                    value,
                    key,
                    headers=headers,
                    on_delivery=self._callbacks[stream],
                )
                return
            except BufferError:
                # The local queue is full: let librdkafka drain it, stay interruptible.
                self.producer.poll(0.1)
                self.check()
                if interruptible and self.stop.is_set():
                    raise Stopped from None

    def poll(self, timeout: float = 0.0) -> None:
        self.producer.poll(timeout)

    def check(self) -> None:
        """Raise KafkaUnavailable after a fatal error or a long outage."""
        if self.fatal is not None:
            raise KafkaUnavailable(f"fatal Kafka error: {self.fatal}")
        if (
            self.down_since is not None
            and time.monotonic() - self.down_since > self.unavailable_after_s
        ):
            raise KafkaUnavailable(
                f"all brokers unreachable for more than {self.unavailable_after_s:.0f}s"
            )

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        remaining: int = self.producer.flush(timeout_s)
        return remaining

    def pending(self) -> int:
        return len(self.producer)

    def _on_delivery(self, stream: str, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered[stream] += 1
            self._delivered_metric[stream].inc()
            self.down_since = None
            return
        self.failed[stream] += 1
        metrics.DELIVERY_FAILURES.labels(stream).inc()
        n = self.failed[stream]
        if n <= 10 or n % LOG_EVERY == 0:
            logger.error(
                "delivery failed %s",
                kv(stream=stream, topic=msg.topic(), error=err, failures=n),
            )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            logger.error("fatal kafka error %s", kv(error=err))
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.down_since is None:
                self.down_since = time.monotonic()
            logger.warning("all brokers down %s", kv(error=err))
        else:
            logger.warning("kafka client error %s", kv(error=err))
