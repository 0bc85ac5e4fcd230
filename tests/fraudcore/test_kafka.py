"""fraudcore.kafka against a real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from fraudcore.kafka import consume_available, consumer_config

# Far longer than the test may take: a call that waited it out would be obvious.
LONG_TIMEOUT_S = 600.0


def test_consume_available_returns_what_has_arrived_without_waiting_for_a_full_batch(
    kafka_config: dict[str, Any],
    new_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = new_topic("available", partitions=1)
    producer = Producer(kafka_config)
    for i in range(3):
        producer.produce(topic, f"m{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer(consumer_config(kafka_config, unique_name("group")))
    consumer.subscribe([topic])
    try:
        got: list[bytes] = []
        started = time.monotonic()
        while len(got) < 3:
            # Asks for 100 with a 10-minute wait: only 3 will ever come.
            batch = consume_available(consumer, 100, LONG_TIMEOUT_S)
            got += [m.value() or b"" for m in batch if m.error() is None]
        waited_s = time.monotonic() - started
    finally:
        consumer.close()

    assert got == [b"m0", b"m1", b"m2"]
    # Each call returned once a message was there, not when its timeout ran out.
    assert waited_s < LONG_TIMEOUT_S / 2


def test_consume_available_waits_for_the_first_message_up_to_its_timeout(
    kafka_config: dict[str, Any],
    new_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = new_topic("empty", partitions=1)
    consumer = Consumer(consumer_config(kafka_config, unique_name("group")))
    consumer.subscribe([topic])
    try:
        assert consume_available(consumer, 100, 1.0) == []
    finally:
        consumer.close()
