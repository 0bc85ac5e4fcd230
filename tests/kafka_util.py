"""Kafka helpers for tests: produce records, read a topic back (read_committed)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer


def produce(
    config: dict[str, str], topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
    count = 0
    for key, value in messages:
        producer.produce(topic, value, key)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0, "not every test message was delivered"
    return count


def produce_records(config: dict[str, str], topic: str, records: Iterable[dict[str, Any]]) -> int:
    return produce(config, topic, ((r["user_id"].encode(), orjson.dumps(r)) for r in records))


def read_topic(
    config: dict[str, str], topic: str, expect: int | None = None, timeout_s: float = 60.0
) -> list[Message]:
    """Every committed message of `topic` (waits for `expect` of them when given)."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    eof: set[int] = set()
    partitions: int | None = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if partitions is None:
                meta = consumer.list_topics(topic, timeout=5).topics[topic]
                partitions = len(meta.partitions)
            if msg is None:
                if expect is None and partitions and len(eof) >= partitions:
                    break
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition() or 0)
                    if expect is None and len(eof) >= (partitions or 1):
                        break
                    continue
                raise AssertionError(f"consume error: {error}")
            eof.discard(msg.partition() or 0)
            out.append(msg)
            if expect is not None and len(out) >= expect:
                break
    finally:
        consumer.close()
    return out


def values(messages: list[Message]) -> list[dict[str, Any]]:
    return [orjson.loads(m.value() or b"null") for m in messages]


def headers(message: Message) -> dict[str, str]:
    """A message's headers as text (the last value wins for a repeated name)."""
    raw: list[tuple[str, bytes | None]] = message.headers() or []  # type: ignore[assignment]
    return {name: (value or b"").decode() for name, value in raw}
