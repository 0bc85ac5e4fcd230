"""Scorer deployments for the tests: bench/deployment.py's Deployment (the one process
harness) on the test stack, with its topics made and the model polled every second."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bench.deployment import Deployment, short_id
from tests.stack import TestStack

REPO = Path(__file__).resolve().parents[2]
# Aliases move within a test, so the scorer looks for a new champion every second.
TEST_ENV = {"SCORER_MODEL_POLL_S": "1"}


def scorer_deployment(
    stack: TestStack,
    model_name: str,
    partitions: int = 3,
    **env: str,
) -> Deployment:
    """A deployment with topics, group and key prefix of its own; the caller cleans it up."""
    world = Deployment(
        stack, model_name, name=f"t-{short_id()}", env={**TEST_ENV, **env},
        log_dir=REPO / ".run" / "test-logs",
    )  # fmt: skip
    world.create_topics(partitions)
    return world


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
