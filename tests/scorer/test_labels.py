"""The scorer's label folder against the corpus of bad labels: each is dead-lettered with
its reason and field, the good ones around them are folded, and scoring goes on."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
import redis

from bench.deployment import Deployment
from scorer.feature_store import FeatureStore
from tests.fraudcore.bad_labels import CORPUS, GOOD
from tests.kafka_util import headers as kafka_headers
from tests.kafka_util import produce, produce_records, read_topic
from tests.scorer.harness import wait_until
from tests.scorer.streams import random_stream
from tests.stack import TestStack


def test_every_bad_label_is_dead_lettered_and_the_good_ones_folded(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack
) -> None:
    world = make_world(partitions=1)
    merchant = f"m-{uuid.uuid4().hex[:8]}"
    # A good fraud label after every bad one, each for a transaction of its own.
    messages: list[tuple[bytes | None, bytes | None]] = []
    good_ids = []
    for i, bad in enumerate(CORPUS):
        messages.append((f"bad-{i}".encode(), bad.raw))
        tid = f"t-{uuid.uuid4().hex[:8]}"
        good_ids.append(tid)
        messages.append((tid.encode(), orjson.dumps({**GOOD, "transaction_id": tid,
                                                     "merchant_id": merchant})))  # fmt: skip
    produce(kafka, world.labels, messages)
    records = [r for r, _ in random_stream(seed=61, n=20)]
    produce_records(kafka, world.transactions, records)

    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        store = FeatureStore(redis.Redis.from_url(stack.redis_url), world.key_prefix)
        wait_until(
            lambda: len(store.merchant_state(merchant).frauds) == len(good_ids),
            60,
            "every good label to be folded",
        )
        assert sorted(store.merchant_state(merchant).frauds) == sorted(good_ids)
        letters = read_topic(kafka, world.topics.topic_labels_dlq, expect=len(CORPUS), timeout_s=60)
        assert len(letters) == len(CORPUS)
        for letter in letters:
            headers = kafka_headers(letter)
            bad = CORPUS[int(headers["dlq.source.offset"]) // 2]
            assert letter.value() == bad.raw or (bad.raw == b"" and letter.value() is None), bad
            assert headers["dlq.reason"] == bad.reason, bad.name
            if bad.reason == "missing_field":
                assert (bad.field or "?") in headers["dlq.field"], bad.name
            else:
                assert headers["dlq.field"] == (bad.field or ""), bad.name
        assert len(read_topic(kafka, world.scores, expect=len(records), timeout_s=60)) == 20
    finally:
        assert scorer.stop() == 0, scorer.tail()
