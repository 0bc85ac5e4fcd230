"""Fixtures of the trainer tests: one synthetic stream on fresh topics per module."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from fraudcore.kafka import ensure_topics
from fraudcore.topics import TopicSpec
from tests.stack import TestStack
from tests.trainer.synth import DAY_S, Stream, make_stream, produce

# Not valid transactions: the trainer must count them, not crash.
INVALID_TRANSACTIONS = (b"", b"{not json", b'{"schema_version": 1, "transaction_id": "x"}')


@dataclass(frozen=True)
class StreamTopics:
    transactions: str
    labels: str
    stream: Stream
    kafka_bootstrap: str
    mlflow_uri: str

    def env(self, model_name: str) -> dict[str, str]:
        """The environment a `python -m trainer` run against these topics needs."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "TOPIC_TRANSACTIONS": self.transactions,
            "TOPIC_LABELS": self.labels,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MODEL_NAME": model_name,
            "TRAINER_EXPERIMENT": "trainer-tests",
            "TRAINER_LABEL_DELAY": "1d",
        }


@pytest.fixture(scope="module")
def stream_topics(stack: TestStack, kafka_config: dict[str, str]) -> Iterator[StreamTopics]:
    suffix = uuid.uuid4().hex[:12]
    tx_topic, label_topic = f"trainer-tx-{suffix}", f"trainer-labels-{suffix}"
    admin = AdminClient(dict(kafka_config))
    ensure_topics(admin, [TopicSpec(tx_topic, 3), TopicSpec(label_topic, 2)])
    start = time.time() - 12 * DAY_S
    stream = make_stream(seed=7, prefix=f"s{suffix}", start_ts=start - start % DAY_S)
    produce(kafka_config, tx_topic,
            [(r["user_id"], orjson.dumps(r)) for r, _ in stream.transactions]
            + [("bad", raw) for raw in INVALID_TRANSACTIONS])  # fmt: skip
    produce(kafka_config, label_topic,
            [(lb["transaction_id"], orjson.dumps(lb)) for lb in stream.labels]
            + [("bad", b'{"schema_version": 1}')])  # fmt: skip
    yield StreamTopics(tx_topic, label_topic, stream, stack.kafka_bootstrap, stack.mlflow_uri)
    if os.environ.get("FRAUD_TEST_KEEP_TOPICS") != "1":
        admin.delete_topics([tx_topic, label_topic], operation_timeout=10)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI installs its own log handler (on the runner's stream); put pytest's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
