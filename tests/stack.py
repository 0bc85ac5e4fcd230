"""Where the test stack comes from (see conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class TestStack:
    kafka_bootstrap: str
    redis_url: str
    mlflow_uri: str
    prometheus_url: str | None = None
    source: str = "external"


@contextmanager
def provide_stack() -> Iterator[TestStack]:
    kafka = os.environ.get("FRAUD_TEST_KAFKA_BOOTSTRAP")
    if kafka:
        yield TestStack(
            kafka_bootstrap=kafka,
            redis_url=os.environ["FRAUD_TEST_REDIS_URL"],
            mlflow_uri=os.environ["FRAUD_TEST_MLFLOW_URI"],
            prometheus_url=os.environ.get("FRAUD_TEST_PROMETHEUS_URL"),
        )
        return
    raise RuntimeError("no test stack: set FRAUD_TEST_* (launcher fallback not written yet)")
