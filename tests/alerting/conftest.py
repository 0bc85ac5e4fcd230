"""Fixtures for the alerting tests: unique topics, a work directory with its own SQLite
file, the service as a subprocess and webhook receivers, all torn down after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerting.helpers import Receiver, Service, ServiceConfig


@pytest.fixture
def service_config(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> ServiceConfig:
    return ServiceConfig(
        bootstrap=kafka_config["bootstrap.servers"],
        alerts_topic=new_topic("alerts", partitions=3),
        dlq_topic=new_topic("alerts-dlq"),
        labels_topic=new_topic("labels"),
        workdir=tmp_path,
    )


@pytest.fixture
def start_service(service_config: ServiceConfig) -> Iterator[Callable[..., Service]]:
    """Start `python -m alerting` and wait until /ready; stopped (SIGTERM) at teardown,
    where a clean exit (code 0) is part of the test."""
    started: list[Service] = []

    def start(**extra_env: str) -> Service:
        service = Service(service_config, **extra_env)
        started.append(service)
        service.wait_ready()
        return service

    yield start
    for service in started:
        if service.proc.returncode is None:
            code = service.stop()
            assert code == 0, f"alerting did not stop cleanly ({code}):\n{service.log()}"


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(decide: Callable[[str | None, int], Any] | None = None) -> Receiver:
        r = Receiver(decide)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
