"""Messages as large as the broker takes: dead-lettered, truncated and marked, never fatal.

The broker accepts a record batch of up to its `message.max.bytes` (1,048,588 bytes by
default); its copy with dead-letter headers cannot fit under that same limit, nor under
the producer's 1,000,000. It used to stop the scorer on the message's offset at every
restart (MSG_SIZE_TOO_LARGE from `produce`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import Producer

from bench.deployment import Deployment
from fraudcore.dead_letter import PRODUCER_MAX_MESSAGE_BYTES
from tests.kafka_util import headers as kafka_headers
from tests.kafka_util import produce_records, read_topic, values
from tests.scorer.streams import random_stream

BROKER_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's default message.max.bytes
# A value whose record batch, with its key and framing, is just under the broker's limit.
HUGE_VALUE_BYTES = BROKER_MAX_MESSAGE_BYTES - 200


def _produce_huge(kafka: dict[str, str], topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({**kafka, "message.max.bytes": 2 * BROKER_MAX_MESSAGE_BYTES})
    errors: list[str] = []
    producer.produce(
        topic, value, key, on_delivery=lambda e, _m: errors.append(str(e)) if e else None
    )
    assert producer.flush(30) == 0 and not errors, f"the broker refused the message: {errors}"


def test_a_transaction_just_under_the_broker_limit_is_dead_lettered_truncated(
    make_world: Callable[..., Deployment], kafka: dict[str, str]
) -> None:
    world = make_world(partitions=1)
    records = [r for r, _ in random_stream(seed=51, n=60)]
    # Uncompressible, so that lz4 cannot bring the batch under any limit.
    huge = b'{"padding":"' + os.urandom(HUGE_VALUE_BYTES // 2).hex().encode()
    huge = huge[:HUGE_VALUE_BYTES]
    produce_records(kafka, world.transactions, records[:30])
    _produce_huge(kafka, world.transactions, b"huge", huge)
    produce_records(kafka, world.transactions, records[30:])

    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        scores = values(read_topic(kafka, world.scores, expect=len(records), timeout_s=60))
        assert sorted(s["transaction_id"] for s in scores) == sorted(
            r["transaction_id"] for r in records
        )
        letters = read_topic(kafka, world.topics.topic_transactions_dlq, expect=1, timeout_s=30)
        assert len(letters) == 1
        letter = letters[0]
        headers = kafka_headers(letter)
        assert headers["dlq.reason"] == "oversized"
        assert headers["dlq.truncated"] == "true"
        assert int(headers["dlq.original.size"]) == len(huge)
        assert headers["dlq.source.topic"] == world.transactions
        assert (headers["dlq.source.partition"], headers["dlq.source.offset"]) == ("0", "30")
        value = letter.value() or b""
        assert 0 < len(value) < PRODUCER_MAX_MESSAGE_BYTES and huge.startswith(value)
        assert letter.key() == b"huge"
    finally:
        assert scorer.stop() == 0, scorer.tail()


def test_a_label_just_under_the_broker_limit_is_dead_lettered_truncated(
    make_world: Callable[..., Deployment], kafka: dict[str, str]
) -> None:
    world = make_world(partitions=1)
    label = {
        "schema_version": 1, "transaction_id": f"t-{uuid.uuid4().hex[:8]}", "user_id": "u",
        "merchant_id": "m", "label": "maybe", "source": "chargeback",
        "available_at": "2026-11-20T10:00:00Z",
    }  # fmt: skip
    body = orjson.dumps(label)
    huge = body[:-1] + b',"note":"' + b"x" * (HUGE_VALUE_BYTES - len(body) - 10) + b'"}'
    _produce_huge(kafka, world.labels, b"huge", huge)
    produce_records(kafka, world.transactions, [r for r, _ in random_stream(seed=52, n=5)])

    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        letters = read_topic(kafka, world.topics.topic_labels_dlq, expect=1, timeout_s=60)
        headers = kafka_headers(letters[0])
        assert headers["dlq.reason"] == "schema_violation" and headers["dlq.field"] == "label"
        assert headers["dlq.truncated"] == "true"
        assert int(headers["dlq.original.size"]) == len(huge)
        assert huge.startswith(letters[0].value() or b"")
        # Still scoring.
        assert len(read_topic(kafka, world.scores, expect=5, timeout_s=30)) == 5
    finally:
        assert scorer.stop() == 0, scorer.tail()
