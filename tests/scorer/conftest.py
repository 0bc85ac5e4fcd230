"""Fixtures shared by the scorer's tests: a feature store, a registered model, isolated
scorer deployments, and the reference run that fault tests compare with."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis

from scorer.feature_store import FeatureStore
from tests.scorer.harness import ScorerWorld
from tests.scorer.models import isolation_model, register
from tests.scorer.reference import OneDay, reference_run
from tests.stack import TestStack


@pytest.fixture
def store(stack: TestStack) -> FeatureStore:
    """A feature store on the test Redis, under a key prefix of its own."""
    client = redis.Redis.from_url(stack.redis_url)
    return FeatureStore(client, key_prefix=f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def shared_model(stack: TestStack) -> str:
    """One registered champion shared by the tests that do not move aliases."""
    name = f"scorer-test-{uuid.uuid4().hex[:8]}"
    register(stack.mlflow_uri, name, isolation_model(seed=1))
    return name


@pytest.fixture
def kafka(stack: TestStack) -> dict[str, str]:
    return {"bootstrap.servers": stack.kafka_bootstrap}


@pytest.fixture
def make_world(
    stack: TestStack, new_topic: Callable[..., str], request: pytest.FixtureRequest
) -> Callable[..., ScorerWorld]:
    """make_world(partitions, model_name, on=<a TestStack>, SCORER_X="..."): a scorer
    deployment with topics of its own, on the shared test stack unless `on` says where
    its Kafka, Redis and MLflow are (topics are made on the shared Kafka). Without a
    model name it scores with `shared_model`."""

    def make(
        partitions: int = 3,
        model_name: str | None = None,
        on: TestStack | None = None,
        **env: str,
    ) -> ScorerWorld:
        return ScorerWorld(
            stack=on or stack,
            transactions=new_topic("transactions", partitions),
            scores=new_topic("scores", partitions),
            alerts=new_topic("alerts", partitions),
            labels=new_topic("labels", 1),
            dlq=new_topic("transactions.dlq", 1),
            labels_dlq=new_topic("labels.dlq", 1),
            model_name=model_name or request.getfixturevalue("shared_model"),
            extra_env=env,
        )

    return make


@pytest.fixture(scope="session")
def one_day(stack: TestStack, shared_model: str) -> OneDay:
    """A stream within one UTC day and the output of an uninterrupted run over it (on the
    shared stack, with `shared_model`)."""
    return reference_run(stack, shared_model)
