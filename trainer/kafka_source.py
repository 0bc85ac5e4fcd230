"""Training data from the transactions and labels topics.

Each topic is read from the beginning up to the end offsets it had when reading started
(read_committed, so aborted and open transactions never count), then reading stops.
Partitions of the transactions topic are merged by event time, stably, keeping each
partition's own order: the same order the scorer saw them in, as far as one order exists.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from fraudcore.contracts import ContractError, decode_label, decode_transaction
from fraudcore.kafka import consumer_config
from fraudcore.logs import kv, where
from trainer.labels import Label
from trainer.sources import Transaction

logger = logging.getLogger(__name__)

# The feature builder reads only these; keeping just them bounds memory per message.
_FEATURE_FIELDS = (
    "transaction_id",
    "user_id",
    "merchant_id",
    "amount",
    "country",
    "lat",
    "lon",
    "device_id",
)
_BATCH = 1000


@dataclass
class TopicStats:
    topic: str
    messages: int = 0
    decoded: int = 0
    out_of_range: int = 0
    invalid: Counter[str] = field(default_factory=Counter)


def watermarks(
    config: dict[str, Any], topic: str, timeout_s: float = 10.0
) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermark now; {} if the topic does not exist."""
    consumer = Consumer(consumer_config(config, f"trainer-probe-{uuid.uuid4().hex[:8]}"))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        return {
            partition: consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            for partition in meta.partitions
        }
    finally:
        consumer.close()


def newest_event_time(config: dict[str, Any], topic: str, timeout_s: float = 10.0) -> float | None:
    """The latest event time among the last message of each partition (None if the topic
    is empty or none of them is a valid transaction): how far a backfill has come."""
    marks = {p: high for p, (low, high) in watermarks(config, topic).items() if high > low}
    if not marks:
        return None
    consumer = Consumer(consumer_config(config, f"trainer-probe-{uuid.uuid4().hex[:8]}"))
    newest: float | None = None
    try:
        consumer.assign([TopicPartition(topic, p, high - 1) for p, high in marks.items()])
        deadline = time.monotonic() + timeout_s
        pending = set(marks)
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(len(pending), 1.0):
                if msg.error() is not None:
                    continue
                pending.discard(msg.partition() or 0)
                try:
                    _, event_ts = decode_transaction(msg.value())
                except ContractError:
                    continue
                newest = event_ts if newest is None else max(newest, event_ts)
    finally:
        consumer.close()
    return newest


def message_count(config: dict[str, Any], topic: str) -> int:
    """Messages currently in a topic (high minus low watermark, summed over partitions)."""
    return sum(max(0, high - low) for low, high in watermarks(config, topic).values())


def read_partitions(
    config: dict[str, Any],
    topic: str,
    handle: Callable[[int, Message], None],
    *,
    idle_timeout_s: float = 10.0,
    tail: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Call handle(partition, message) for every message up to the end offsets of now.

    A partition whose end cannot be reached (an open producer transaction holds back the
    last stable offset) is given up after idle_timeout_s without a message, with a warning.
    Returns the number of messages handled.
    """
    marks = {p: (low, high) for p, (low, high) in watermarks(config, topic).items() if high > low}
    if not marks:
        return 0
    ends = {p: high for p, (_, high) in marks.items()}
    # tail: only the newest messages, shared evenly over the partitions (bootstrap).
    share = None if tail is None else -(-tail // len(marks))
    starts = {
        p: OFFSET_BEGINNING if share is None else max(low, high - share)
        for p, (low, high) in marks.items()
    }
    consumer = Consumer(
        consumer_config(
            config, f"trainer-{uuid.uuid4().hex[:12]}", **{"enable.partition.eof": True}
        )
    )
    handled = 0
    try:
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        pending = dict(ends)
        last_message = time.monotonic()
        while pending:
            messages = consumer.consume(_BATCH, timeout=1.0)
            if not messages:
                if time.monotonic() - last_message > idle_timeout_s:
                    logger.warning(
                        "end offsets not reached, stopping %s",
                        kv(topic=topic, partitions=sorted(pending), idle_s=idle_timeout_s),
                    )
                    break
                continue
            last_message = time.monotonic()
            for msg in messages:
                err = msg.error()
                partition = msg.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (msg.offset() or 0) >= pending.get(partition, 0):
                            pending.pop(partition, None)
                        continue
                    if err.fatal() or not err.retriable():
                        raise KafkaException(err)
                    logger.warning("retriable consume error %s", kv(topic=topic, error=err))
                    continue
                offset = msg.offset() or 0
                if partition not in pending or offset >= pending[partition]:
                    continue  # past the end we fixed at the start
                handle(partition, msg)
                handled += 1
                if offset + 1 >= pending[partition]:
                    pending.pop(partition)
            if on_progress is not None:
                on_progress(handled)
    finally:
        consumer.close()
    return handled


def read_labels(
    config: dict[str, Any],
    topic: str,
    *,
    tail: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Label], TopicStats]:
    stats = TopicStats(topic)
    labels: list[Label] = []

    def handle(partition: int, msg: Message) -> None:
        stats.messages += 1
        try:
            record, available = decode_label(msg.value())
        except ContractError as exc:
            stats.invalid[exc.reason] += 1
            logger.debug(
                "invalid label %s",
                kv(at=where(topic, partition, msg.offset() or 0), reason=exc.reason, error=exc),
            )
            return
        stats.decoded += 1
        labels.append(
            Label(
                record["transaction_id"],
                record["merchant_id"],
                record["user_id"],
                record["label"],
                available,
                record.get("scenario"),
            )
        )

    read_partitions(config, topic, handle, tail=tail, on_progress=on_progress)
    return labels, stats


def read_transactions(
    config: dict[str, Any],
    topic: str,
    *,
    since: float | None = None,
    until: float | None = None,
    tail: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Iterator[Transaction], int, TopicStats]:
    """(transactions merged by event time, how many, stats)."""
    stats = TopicStats(topic)
    parts: dict[int, list[Transaction]] = {}

    def handle(partition: int, msg: Message) -> None:
        stats.messages += 1
        try:
            record, event_ts = decode_transaction(msg.value())
        except ContractError as exc:
            stats.invalid[exc.reason] += 1
            logger.debug(
                "invalid transaction %s",
                kv(at=where(topic, partition, msg.offset() or 0), reason=exc.reason, error=exc),
            )
            return
        if (since is not None and event_ts < since) or (until is not None and event_ts >= until):
            stats.out_of_range += 1
            return
        stats.decoded += 1
        slim = {k: record[k] for k in _FEATURE_FIELDS if k in record}
        parts.setdefault(partition, []).append(Transaction(slim, event_ts))

    read_partitions(config, topic, handle, tail=tail, on_progress=on_progress)
    ordered = [parts[p] for p in sorted(parts)]
    merged = heapq.merge(*ordered, key=lambda t: t.event_ts)
    return merged, stats.decoded, stats
