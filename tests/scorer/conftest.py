"""Fixtures shared by the scorer's tests: a feature store, a registered model, isolated
scorer deployments, and the reference run that fault tests compare with."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis

from bench.deployment import Deployment
from scorer.feature_store import FeatureStore
from tests.scorer.harness import scorer_deployment
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
def make_world(stack: TestStack, request: pytest.FixtureRequest) -> Callable[..., Deployment]:
    """make_world(partitions, model_name, on=<a TestStack>, SCORER_X="..."): a scorer
    deployment with topics of its own, on the shared test stack unless `on` says where
    its Kafka, Redis and MLflow are; removed after the test. Without a model name it
    scores with `shared_model`."""

    def make(
        partitions: int = 3,
        model_name: str | None = None,
        on: TestStack | None = None,
        **env: str,
    ) -> Deployment:
        world = scorer_deployment(
            on or stack, model_name or request.getfixturevalue("shared_model"), partitions, **env
        )
        request.addfinalizer(world.cleanup)
        return world

    return make


@pytest.fixture(scope="session")
def one_day(stack: TestStack, shared_model: str) -> OneDay:
    """A stream within one UTC day and the output of an uninterrupted run over it (on the
    shared stack, with `shared_model`)."""
    return reference_run(stack, shared_model)
