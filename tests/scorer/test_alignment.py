"""Day alignment on a real Kafka: a backlog of two partitions, consumed in large chunks,
is taken so that no partition scores a day while the other still has earlier days left;
a partition at its end (behind transaction markers, too) holds no one back; nothing is
taken twice or lost."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from fraudcore.contracts import format_time
from scorer.alignment import DayAlignment
from scorer.pipeline import decode_batch

DAY = 86_400.0
T0 = 1_780_000_000.0 // DAY * DAY


def _records(prefix: str, days: int, per_day: int) -> list[dict[str, Any]]:
    return [
        {
            "schema_version": 1,
            "transaction_id": f"{prefix}-{day}-{i}",
            "user_id": f"{prefix}-u{i % 7}",
            "merchant_id": f"m{i % 5}",
            "amount": 10.0 + i,
            "timestamp": format_time(T0 + day * DAY + i * (DAY / per_day)),
        }
        for day in range(days)
        for i in range(per_day)
    ]


def _produce(
    kafka: dict[str, Any], topic: str, partition: int, records: list[dict[str, Any]], txn: bool
) -> None:
    config = dict(kafka)
    if txn:
        config["transactional.id"] = f"{topic}-{partition}"
    producer = Producer(config)
    if txn:
        producer.init_transactions()
    for start in range(0, len(records), 50):
        if txn:
            producer.begin_transaction()
        for record in records[start : start + 50]:
            producer.produce(topic, orjson.dumps(record), partition=partition)
        if txn:
            producer.commit_transaction()
    producer.flush(10)


def _drain(kafka: dict[str, Any], topic: str, expected: int) -> list[tuple[int, int]]:
    """(partition, day) of each transaction in the order the alignment took them."""
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"align-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    alignment = DayAlignment(consumer)
    consumer.subscribe([topic], on_assign=lambda c, parts: alignment.assigned(parts))
    taken: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    try:
        while len(taken) < expected and time.monotonic() < deadline:
            alignment.release()
            msgs = [m for m in consumer.consume(400, 0.5) if m.error() is None]
            accepted, rejected, _ = decode_batch(msgs, 16_384, 1e12, time.time())
            assert not rejected
            kept, _, _ = alignment.admit(accepted, rejected)
            taken += [
                (a.msg.partition() or 0, int(a.event_ts // DAY) - int(T0 // DAY)) for a in kept
            ]
    finally:
        consumer.close()
    return taken


def _violations(taken: list[tuple[int, int]]) -> list[str]:
    """Takes of day d from one partition while the other had days before d left."""
    total = Counter(taken)
    seen: Counter[tuple[int, int]] = Counter()
    found = []
    for partition, day in taken:
        for (other, other_day), count in total.items():
            if other != partition and other_day < day and seen[other, other_day] < count:
                found.append(f"p{partition} day {day} before p{other} day {other_day} was done")
        seen[partition, day] += 1
    return found


def test_partitions_are_taken_day_by_day(
    kafka: dict[str, Any], new_topic: Callable[..., str]
) -> None:
    topic = new_topic("align", partitions=2)
    first, second = _records("a", 3, 150), _records("b", 3, 150)
    _produce(kafka, topic, 0, first, txn=False)
    _produce(kafka, topic, 1, second, txn=False)

    taken = _drain(kafka, topic, len(first) + len(second))

    assert Counter(taken) == Counter([(0, d) for d in range(3) for _ in range(150)]) + Counter(
        [(1, d) for d in range(3) for _ in range(150)]
    )
    assert _violations(taken) == []


def test_a_partition_at_its_end_holds_no_one_back(
    kafka: dict[str, Any], new_topic: Callable[..., str]
) -> None:
    topic = new_topic("align-end", partitions=2)
    longer, shorter = _records("a", 4, 100), _records("b", 1, 100)
    _produce(kafka, topic, 0, longer, txn=False)
    # Transactional: its last offset is a commit marker, not a message.
    _produce(kafka, topic, 1, shorter, txn=True)

    taken = _drain(kafka, topic, len(longer) + len(shorter))

    assert len(taken) == len(longer) + len(shorter)
    assert _violations(taken) == []
