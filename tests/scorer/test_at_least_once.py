"""SCORER_DELIVERY=at_least_once: no Kafka transactions, outputs flushed before the offsets
are committed. The benchmark compares it with the default exactly-once mode."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from bench.deployment import Deployment
from fraudcore.contracts import validate
from tests.kafka_util import produce_records, read_topic, values
from tests.scorer.harness import wait_until
from tests.scorer.models import isolation_model, register
from tests.scorer.streams import random_stream
from tests.stack import TestStack


def _committed(kafka: dict[str, str], group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({**kafka, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(tps, timeout=10)]
    finally:
        consumer.close()


def _ends(kafka: dict[str, str], topic: str, partitions: int) -> list[int]:
    consumer = Consumer({**kafka, "group.id": f"ends-{uuid.uuid4().hex[:8]}"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def test_at_least_once_scores_everything_and_commits_offsets(
    stack: TestStack, make_world: Callable[..., Deployment]
) -> None:
    kafka = {"bootstrap.servers": stack.kafka_bootstrap}
    model_name = f"scorer-alo-{uuid.uuid4().hex[:8]}"
    register(stack.mlflow_uri, model_name, isolation_model(seed=5, trees=20))
    partitions = 3
    world = make_world(partitions, model_name, SCORER_DELIVERY="at_least_once")
    records = [record for record, _ in random_stream(seed=31, n=600, users=40)]
    produce_records(kafka, world.transactions, records)

    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        scores = values(read_topic(kafka, world.scores, expect=len(records), timeout_s=120))
        # Without failures, at least once delivers each score once.
        assert sorted(s["transaction_id"] for s in scores) == sorted(
            r["transaction_id"] for r in records
        )
        for score in scores:
            validate("scores", score)
        ends = _ends(kafka, world.transactions, partitions)
        wait_until(
            lambda: _committed(kafka, world.group, world.transactions, partitions) == ends,
            timeout_s=30,
            what="the consumed offsets to be committed",
        )
    finally:
        assert scorer.stop() == 0, scorer.tail()
    assert "delivery=at_least_once" in scorer.log.read_text()
