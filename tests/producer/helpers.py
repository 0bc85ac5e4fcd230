"""Shared pieces of the producer tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from confluent_kafka import Message

from fraudcore.settings import load_settings
from producer.events import Event
from producer.population import Population, PopulationConfig, build_population
from producer.settings import ProducerSettings
from producer.simulator import Simulator, TrafficConfig

# A fixed, whole-second past instant: runs from it are reproducible.
START = 1_750_000_000.0
DAY = 86400.0


def simulate(
    *,
    seed: int = 7,
    users: int = 200,
    merchants: int = 60,
    start: float = START,
    count: int | None = None,
    until: float | None = None,
    **traffic: object,
) -> tuple[Population, list[Event]]:
    """Events of a fresh simulator: the first `count`, or all before `until`."""
    pop = build_population(PopulationConfig(seed=seed, users=users, merchants=merchants))
    sim = Simulator(pop, TrafficConfig(start=start, **traffic))  # type: ignore[arg-type]
    events = sim.events()
    if count is not None:
        return pop, list(itertools.islice(events, count))
    assert until is not None
    return pop, list(itertools.takewhile(lambda e: e.event_ts < until, events))


def headers_of(msg: Message) -> dict[str, str]:
    headers: list[tuple[str, bytes | None]] = msg.headers() or []  # type: ignore[assignment]
    return {name: (value or b"").decode() for name, value in headers}


def settings_for(
    kafka_config: dict[str, str], new_topic: Callable[..., str], partitions: int = 3
) -> ProducerSettings:
    """Producer settings on fresh topics of the test Kafka."""
    return load_settings(
        ProducerSettings,
        kafka_bootstrap_servers=kafka_config["bootstrap.servers"],
        topic_transactions=new_topic("p-tx", partitions),
        topic_labels=new_topic("p-labels", 1),
        topic_transactions_dlq=new_topic("p-dlq", 1),
        transactions_partitions=partitions,
        producer_metrics_port=0,
        producer_startup_timeout_s=30.0,
    )
