"""Fixtures that hand every test a real Kafka, Redis and MLflow.

Where the stack comes from, in order:
1. an external stack, when FRAUD_TEST_KAFKA_BOOTSTRAP / FRAUD_TEST_REDIS_URL /
   FRAUD_TEST_MLFLOW_URI (and optionally FRAUD_TEST_PROMETHEUS_URL and
   FRAUD_TEST_KAFKA_METRICS) point at one;
2. testcontainers, when a Docker engine answers;
3. the local launcher (real processes on the TEST_* ports of .env, in .run/test).

In CI (CI=true) a missing service fails the run; it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from fraudcore.kafka import ensure_topics
from fraudcore.topics import TopicSpec
from tests.stack import TestStack, provide_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[TestStack]:
    with provide_stack() as running:
        yield running


@pytest.fixture(scope="session")
def kafka_config(stack: TestStack) -> dict[str, Any]:
    return {"bootstrap.servers": stack.kafka_bootstrap}


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Names (topics, groups, ids) unique to this test run, so tests never collide."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def new_topic(
    kafka_config: dict[str, Any], unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Create a uniquely named topic: new_topic("transactions", partitions=6)."""
    admin = AdminClient(kafka_config)
    created: list[str] = []

    def make(prefix: str, partitions: int = 1, **config: str) -> str:
        name = unique_name(prefix)
        ensure_topics(admin, [TopicSpec(name, partitions, tuple(config.items()))])
        created.append(name)
        return name

    yield make
    if created and os.environ.get("FRAUD_TEST_KEEP_TOPICS") != "1":
        admin.delete_topics(created, operation_timeout=10)
