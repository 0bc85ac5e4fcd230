"""Kafka client setup shared by the services: configs, topic creation, error classes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fraudcore.logs import kv
from fraudcore.topics import TopicSpec

logger = logging.getLogger(__name__)


def producer_config(base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all producer with batching suited to high rates."""
    return {
        **base,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "batch.num.messages": 10000,
        **extra,
    }


def consumer_config(base: dict[str, Any], group_id: str, **extra: Any) -> dict[str, Any]:
    """A consumer that commits explicitly and only ever sees committed data."""
    return {
        **base,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        **extra,
    }


def produce_waiting(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    wait_s: float = 0.05,
) -> None:
    """`producer.produce`, waiting while the local queue is full (BufferError: the one
    produce error that passes by itself, as deliveries drain). Every other error is
    raised: the consumer loops size what they send to fit (fraudcore/dead_letter.py), so
    it is the producer's, not the message's."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value=value, key=key, headers=headers)
            else:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
            return
        except BufferError:
            producer.poll(wait_s)


def consume_available(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to `max_messages`: waits up to `timeout_s` for the first one, then takes only
    what has already arrived. `Consumer.consume(n, timeout)` returns early only once it
    has n messages; with fewer it waits out its whole timeout, holding back a lone
    message (an alert, say) for that long."""
    first = consumer.consume(1, timeout_s)
    if not first or max_messages <= 1:
        return first
    return first + consumer.consume(max_messages - 1, 0)


def ensure_topics(
    admin: AdminClient, specs: Iterable[TopicSpec], timeout_s: float = 30.0, replicas: int = 1
) -> list[str]:
    """Create the topics that do not exist yet, with `replicas` copies each; returns the
    names created. Idempotent: an existing topic is left as it is. With more than one
    copy a write is acknowledged once two hold it (min.insync.replicas=2 with acks=all,
    the producers' setting), so one broker may be down without losing a record."""
    specs = list(specs)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    insync = {"min.insync.replicas": str(min(2, replicas))} if replicas > 1 else {}
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=replicas,
                config={**insync, **dict(s.config)},
            )
            for s in missing
        ],
        operation_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
            logger.info("topic created %s", kv(topic=name))
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def wait_for_kafka(config: dict[str, Any], timeout_s: float) -> None:
    """Block until the cluster answers a metadata request, or raise TimeoutError."""
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            admin.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            logger.info("kafka reachable %s", kv(attempt=attempt))
            return
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Kafka not reachable after {timeout_s:.0f}s: {exc}") from exc
            logger.info("waiting for kafka %s", kv(attempt=attempt, error=exc))
            time.sleep(min(2.0, 0.2 * attempt))
