"""`python -m bench.handbook_stream`: the handbook benchmark through Kafka.

The offline half is `python -m trainer handbook` itself (the book split, hist_gb with its defaults), using the
trainer's own functions; the version it fits is registered under a fresh name as champion.
The streaming half deploys that version for real: fresh topics, `python -m scorer` as a
process, `python -m producer --preset handbook` replaying the same window (labels 7 days
late, which the scorer's label folder folds into merchant state as they arrive). The scores
come back from the `scores` topic (read_committed), the truth from the labels topic, and the
same split, known-compromised exclusion and figures are computed on them.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from bench.config import Stack
from bench.deployment import Deployment, ServiceProcess
from bench.handbook_stream.scores import ScoreCollector, compare_rows, stream_figures
from fraudcore.kafka import consumer_config, wait_for_kafka
from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT, TopicSettings
from trainer import kafka_source
from trainer.labels import LabelBook
from trainer.models import ModelConfig
from trainer.pipeline import DataRequest, SplitRequest, holdout_split, load_table, train_on
from trainer.progress import Bars
from trainer.publish import publish
from trainer.settings import TrainerSettings
from trainer.timeutil import iso

logger = logging.getLogger(__name__)

_LOG_EVERY_S = 15.0
PARTITIONS = 6
# Feature state of an interrupted run expires by itself (wall clock, not event time).
_STATE_TTL_S = 6 * 3600


class StreamSettings(TrainerSettings):
    """The trainer's settings plus the Redis the scorer under test keeps its state in."""

    redis_url: str


@dataclass(frozen=True)
class StreamOptions:
    data: DataRequest
    split: SplitRequest
    config: ModelConfig
    experiment: str = "handbook-stream"
    speed: float = 0.0
    ready_timeout_s: float = 120.0
    replay_timeout_s: float = 1800.0
    drain_timeout_s: float = 900.0


@dataclass
class Steps:
    """Wall time of each step, and the highest 1-minute load average seen."""

    seconds: dict[str, float] = field(default_factory=dict)
    peak_load: float = 0.0

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        logger.info("step started %s", kv(step=name))
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 1)
            self.sample_load()
            logger.info("step done %s", kv(step=name, seconds=self.seconds[name]))

    def sample_load(self) -> None:
        self.peak_load = max(self.peak_load, os.getloadavg()[0])


class OutputReader:
    """Reads what the deployment writes, from the beginning, read_committed: the scores
    and both dead-letter topics (their headers say who dead-lettered and why)."""

    def __init__(self, kafka: dict[str, Any], topics: TopicSettings, group: str) -> None:
        self.consumer = Consumer(consumer_config(kafka, group))
        self.topics = topics
        self.scores = ScoreCollector()
        self.dead: Counter[str] = Counter()
        names = (topics.topic_scores, topics.topic_transactions_dlq, topics.topic_labels_dlq)
        meta = self.consumer.list_topics(timeout=10).topics
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in meta[t].partitions]
        )

    @property
    def scorer_dead_lettered(self) -> int:
        return sum(n for key, n in self.dead.items() if key.startswith("scorer:"))

    def pump(self, timeout_s: float = 0.5) -> int:
        messages = self.consumer.consume(2000, timeout_s)
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal() or not error.retriable():
                    raise KafkaException(error)
                logger.warning("consume error, retrying %s", kv(error=error))
                continue
            if msg.topic() == self.topics.topic_scores:
                self.scores.add(msg.value(), msg.partition() or 0)
            else:
                self.dead[_dead_letter_kind(msg, self.topics)] += 1
        return len(messages)

    def close(self) -> None:
        self.consumer.close()


def _dead_letter_kind(msg: Message, topics: TopicSettings) -> str:
    # A consumed message's headers are always a list of (name, bytes) pairs.
    raw: list[tuple[str, bytes | None]] = msg.headers() or []  # type: ignore[assignment]
    headers = {k: _text(v) for k, v in raw}
    if msg.topic() == topics.topic_labels_dlq:
        return "labels:" + headers.get("dlq.reason", "unknown")
    if "dlq.source.topic" in headers:
        return "scorer:" + headers.get("dlq.reason", "unknown")
    return f"{headers.get('source', 'unknown')}:{headers.get('reason', 'unknown')}"


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def run_stream_benchmark(
    settings: StreamSettings, options: StreamOptions, bars: Bars
) -> dict[str, Any]:
    """Offline figures, then the same model deployed and judged on its streamed scores."""
    steps = Steps()
    kafka = settings.client_config()
    wait_for_kafka(kafka, settings.trainer_startup_timeout_s)
    with steps.step("offline: features and fit"):
        table, report = load_table(options.data, None, ("", ""), bars)
        split = holdout_split(table, options.split, options.data.label_delay_s)
        outcome = train_on(
            table, split, options.config, label_delay_s=options.data.label_delay_s,
            source=report.source,
        )  # fmt: skip
    with steps.step("register champion"):
        published = publish(
            outcome,
            report,
            tracking_uri=settings.mlflow_tracking_uri,
            experiment=options.experiment,
            model_name=settings.model_name,
            test_cards=table.user_ids[split.test_rows],
            test_ts=table.event_ts[split.test_rows],
            scenarios=table.labels.scenarios(table.transaction_ids[split.test_rows]),
            startup_timeout_s=settings.trainer_startup_timeout_s,
        )
    if published.alias != "champion":
        raise RuntimeError(f"{settings.model_name} v{published.version} is not champion")
    world = Deployment(
        Stack(settings.kafka_bootstrap_servers, settings.redis_url, settings.mlflow_tracking_uri),
        settings.model_name,
        name=f"hbstream-{uuid.uuid4().hex[:8]}",
        env={"SCORER_FEATURE_TTL_S": str(_STATE_TTL_S)},
        log_dir=REPO_ROOT / ".run" / "handbook-stream",
    )
    try:
        stream = _stream(world, options, steps)
    finally:
        with steps.step("clean-up"):
            world.cleanup(groups=True)
    with steps.step("streaming: evaluate"):
        labels = LabelBook()
        for label in stream.labels:
            labels.add(label)
        stream_table, stream_scores = stream.reader.scores.table(labels)
        stream_split, figures = stream_figures(
            stream_table, stream_scores, split.holdout, outcome.model.threshold
        )
        offline_scores = outcome.model.score(table.features)
        everything = np.arange(len(stream_table))
        comparison = {
            "test_days": compare_rows(
                table, split.test_rows, offline_scores, stream_table, stream_split.test_rows,
                stream_scores,
            ),
            "whole_replay": compare_rows(
                table, np.arange(len(table)), offline_scores, stream_table, everything,
                stream_scores,
            ),
        }  # fmt: skip
    reader = stream.reader
    return {
        "model_name": settings.model_name,
        "model_version": published.version,
        "world": world.name,
        "holdout": split.holdout.describe(),
        "offline": {
            "test_rows": int(split.test_rows.size),
            "test_frauds": int(split.test_targets.sum()),
            "excluded_known_compromised": split.excluded_known_compromised,
            "train_rows": int(split.train_rows.size),
            "train_frauds": int(split.train_targets.sum()),
            "metrics": _finite(outcome.metrics),
            "data": report.summary(),
        },
        "streaming": {
            "test_rows": int(stream_split.test_rows.size),
            "test_frauds": int(stream_split.test_targets.sum()),
            "excluded_known_compromised": stream_split.excluded_known_compromised,
            "metrics": _finite(figures),
        },
        "counts": {
            "replayed": stream.replayed,
            "scored": len(reader.scores),
            "duplicate_scores": reader.scores.duplicates,
            "invalid_scores": dict(reader.scores.invalid),
            "dead_lettered": dict(reader.dead),
            "labels_read": len(stream.labels),
            "partition_skew_hours": reader.scores.partition_skew_hours(),
            "invalid_labels": dict(stream.label_invalid),
        },
        "comparison": comparison,
        "seconds": steps.seconds,
        "peak_load_1m": round(steps.peak_load, 2),
        "replay_args": stream.producer_args,
        "logs": [str(process.log) for process in world.processes],
    }


def _finite(figures: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in figures.items() if np.isfinite(v)}


@dataclass
class Streamed:
    reader: OutputReader
    replayed: int
    labels: list[Any]
    label_invalid: Counter[str]
    producer_args: list[str]


def _stream(world: Deployment, options: StreamOptions, steps: Steps) -> Streamed:
    with steps.step("streaming: topics and scorer ready"):
        world.create_topics(PARTITIONS)
        scorer = world.start_scorer("handbook-stream")
        scorer.wait_ready(options.ready_timeout_s)
    reader = OutputReader(world.kafka, world.topics, f"{world.name}-reader")
    try:
        since, until = options.data.since, options.data.until
        assert since is not None and until is not None and options.data.path is not None
        args = [
            "--preset", "handbook", "--from-file", str(options.data.path),
            "--since", iso(since), "--until", iso(until), "--speed", f"{options.speed:g}",
            "--metrics-port", "0", "--no-progress", "--no-create-topics",
        ]  # fmt: skip
        with steps.step("streaming: replay (scoring alongside)"):
            producer = world.start_producer(args, PARTITIONS)
            _follow(reader, scorer, producer, options.replay_timeout_s, steps)
            if producer.proc.returncode != 0:
                raise RuntimeError(
                    f"producer exited {producer.proc.returncode}:\n{producer.tail()}"
                )
        replayed = kafka_source.message_count(world.kafka, world.topics.topic_transactions)
        with steps.step("streaming: drain scores"):
            _drain(reader, scorer, replayed, options.drain_timeout_s, steps)
        with steps.step("streaming: read labels"):
            labels, stats = kafka_source.read_labels(world.kafka, world.topics.topic_labels)
    finally:
        reader.close()
    return Streamed(reader, replayed, labels, stats.invalid, args)


def _progress(reader: OutputReader, started: float, **extra: Any) -> None:
    logger.info(
        "streaming %s",
        kv(
            elapsed_s=round(time.monotonic() - started),
            scored=len(reader.scores),
            dead_lettered=sum(reader.dead.values()),
            load_1m=os.getloadavg()[0],
            **extra,
        ),
    )


def _follow(
    reader: OutputReader,
    scorer: ServiceProcess,
    producer: ServiceProcess,
    timeout_s: float,
    steps: Steps,
) -> None:
    """Read scores while the producer replays; bounded, and the scorer must stay up."""
    started = last_log = time.monotonic()
    while producer.running():
        reader.pump()
        if not scorer.running():
            raise RuntimeError(f"scorer exited {scorer.proc.returncode}:\n{scorer.tail()}")
        now = time.monotonic()
        if now - started > timeout_s:
            raise TimeoutError(f"the replay took longer than {timeout_s:.0f}s")
        if now - last_log >= _LOG_EVERY_S:
            last_log = now
            steps.sample_load()
            _progress(reader, started, producer="running")


def _drain(
    reader: OutputReader, scorer: ServiceProcess, expected: int, timeout_s: float, steps: Steps
) -> None:
    """Until every replayed transaction has a score or a dead letter (bounded, logged)."""
    started = last_log = time.monotonic()
    while len(reader.scores) + reader.scorer_dead_lettered < expected:
        reader.pump()
        if not scorer.running():
            raise RuntimeError(f"scorer exited {scorer.proc.returncode}:\n{scorer.tail()}")
        now = time.monotonic()
        if now - started > timeout_s:
            raise TimeoutError(
                f"{len(reader.scores)} scores and {reader.scorer_dead_lettered} dead letters "
                f"for {expected} transactions after {timeout_s:.0f}s"
            )
        if now - last_log >= _LOG_EVERY_S:
            last_log = now
            steps.sample_load()
            _progress(reader, started, expected=expected)
    _progress(reader, started, expected=expected, done=True)
