"""Fixtures shared by the scorer's feature tests."""

from __future__ import annotations

import uuid

import pytest
import redis

from scorer.feature_store import FeatureStore
from tests.stack import TestStack


@pytest.fixture
def store(stack: TestStack) -> FeatureStore:
    """A feature store on the test Redis, under a key prefix of its own."""
    client = redis.Redis.from_url(stack.redis_url)
    return FeatureStore(client, key_prefix=f"test-{uuid.uuid4().hex[:8]}")
