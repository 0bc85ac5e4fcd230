"""Wiring: a run's options -> source, clock, Kafka output, runner. The CLI and the tests
both come through execute()."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, field, replace

from confluent_kafka.admin import AdminClient

from fraudcore.kafka import ensure_topics, wait_for_kafka
from fraudcore.logs import kv
from fraudcore.topics import stack_topics
from producer.clock import EventClock
from producer.events import Event, Rejected
from producer.kafka_output import KafkaOutput, Topics
from producer.population import PopulationConfig, build_population
from producer.replay import ReplayConfig, ReplaySource
from producer.runner import RunLimits, Runner, RunSummary
from producer.settings import ProducerSettings
from producer.simulator import Simulator, TrafficConfig

logger = logging.getLogger(__name__)

DEFAULT_BACKFILL_S = 7 * 86400.0


@dataclass(frozen=True)
class RunOptions:
    limits: RunLimits = field(default_factory=RunLimits)
    speed: float | None = None  # None: 1 (real time) for a simulation, 0 for a replay
    population: PopulationConfig = field(default_factory=PopulationConfig)
    # traffic.start None: now at speed 1, else now minus DEFAULT_BACKFILL_S
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    replay: ReplayConfig | None = None  # set: replay this file instead of simulating
    create_topics: bool = True


@dataclass
class Prepared:
    source: Iterable[Event | Rejected]
    clock: EventClock
    name: str  # "simulator" or "replay"
    replay: ReplaySource | None = None
    clock_origin: float | None = None  # the clock starts here when the run starts


def prepare_source(options: RunOptions, now: float | None = None) -> Prepared:
    """Build the source and its clock (raises ValueError on bad options)."""
    if options.replay is not None:
        speed = 0.0 if options.speed is None else options.speed
        replay = ReplaySource(options.replay)
        # A replay's clock starts at its first row; old data is never held to the wall.
        return Prepared(replay, EventClock(speed, not_after_wall=False), "replay", replay)
    speed = 1.0 if options.speed is None else options.speed
    now = time.time() if now is None else now
    start = options.traffic.start
    if start is None:
        start = now if speed == 1.0 else now - DEFAULT_BACKFILL_S
    traffic = replace(options.traffic, start=start)
    population = build_population(options.population)
    simulator = Simulator(population, traffic)
    clock = EventClock(speed, not_after_wall=True)
    natural = sum(u.tx_per_day for u in population.users) / 86400.0 / (1 - traffic.fraud_rate)
    logger.info(
        "simulation ready %s",
        kv(
            users=len(population.users),
            merchants=len(population.merchants),
            seed=options.population.seed,
            fraud_rate=traffic.fraud_rate,
            speed=speed,
            start=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            daily_mean_event_tx_per_s=round(natural, 3),
        ),
    )
    rate = options.limits.rate
    if rate and speed and natural * speed < rate:
        logger.warning(
            "--rate may not be reached: the population makes about %.2f tx/s at speed %g "
            "over a day, more in its active hours, less at night (raise --speed, --users or "
            "--tx-per-user-day, or use --speed 0)",
            natural * speed,
            speed,
        )
    return Prepared(simulator.events(), clock, "simulator", clock_origin=start)


def topics_of(settings: ProducerSettings) -> Topics:
    return Topics(
        transactions=settings.topic_transactions,
        labels=settings.topic_labels,
        dlq=settings.topic_transactions_dlq,
    )


def connect(settings: ProducerSettings, create_topics: bool) -> None:
    """Bounded wait for Kafka (TimeoutError), then create the producer's topics if missing."""
    config = settings.client_config()
    wait_for_kafka(config, settings.producer_startup_timeout_s)
    if create_topics:
        wanted = set(astuple(topics_of(settings)))
        specs = [
            s for s in stack_topics(settings, settings.transactions_partitions) if s.name in wanted
        ]
        ensure_topics(AdminClient(config), specs)


def execute(
    settings: ProducerSettings,
    options: RunOptions,
    stop: threading.Event | None = None,
    on_tick: Callable[[RunSummary], None] | None = None,
    prepared: Prepared | None = None,
) -> RunSummary:
    """Connect, run to the end (a limit, the end of the file, or `stop`), flush."""
    stop = stop or threading.Event()
    prepared = prepared or prepare_source(options)
    connect(settings, options.create_topics)
    output = KafkaOutput(
        settings.client_config(),
        topics_of(settings),
        stop,
        settings.producer_dependency_timeout_s,
    )
    runner = Runner(
        prepared.source, output, prepared.clock, options.limits, stop, prepared.name, on_tick
    )
    if prepared.clock_origin is not None:
        prepared.clock.anchor(prepared.clock_origin)
    summary = runner.run()
    logger.info(
        "run finished %s",
        kv(
            source=summary.source,
            stopped_by=summary.stopped_by,
            transactions=summary.transactions,
            labels=summary.labels,
            labels_dropped=summary.labels_dropped,
            dead_lettered=summary.dead_lettered,
            validation_failures=summary.validation_failures,
            delivered=sum(summary.delivered.values()),
            delivery_failures=sum(summary.delivery_failures.values()),
            undelivered=summary.undelivered,
            wall_s=round(summary.wall_s, 2),
        ),
    )
    return summary
