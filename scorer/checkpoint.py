"""A batch's commit, in one place: its offsets, the confirmation of its Redis state, its
Kafka transaction (or, at least once, its delivery and offset commit), its rewind.

The order is what makes a batch count once: the user states the batch wrote must be
confirmed in Redis before its outputs and offsets are committed to Kafka; a refused or
unanswered write, an aborted transaction or a failed delivery rewinds the consumer to the
batch's first offsets, and the batch is consumed and computed again (a replay, which the
feature state makes idempotent). Exactly once, the Kafka commit of a batch runs in the
background (scorer/transactions.py) while the next batch is scored, and is settled before
the next transaction begins; a batch taken in after one that is rewound is rewound too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from fraudcore.kafka import produce_waiting
from fraudcore.logs import kv
from scorer import metrics
from scorer.pipeline import OutMessage
from scorer.transactions import BackgroundCommitter, CommitStuck
from scorer.watchdog import exit_stalled

logger = logging.getLogger(__name__)

# record(committed_at, confirm_s, commit_s): the batch's metrics, once it is committed.
Record = Callable[[float, float, float], None]


@dataclass
class Offsets:
    """Where a batch starts and ends in each partition it read."""

    first: dict[tuple[str, int], int] = field(default_factory=dict)
    last: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, topic: str, partition: int, offset: int) -> None:
        self.first.setdefault((topic, partition), offset)
        self.last[topic, partition] = offset

    def next_offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o + 1) for (t, p), o in self.last.items()]


@dataclass(frozen=True)
class KafkaHooks:
    """What the checkpoint tells the service about Kafka's health."""

    failed: Callable[[KafkaError], None]  # retriable error: count, back off (may raise)
    recovered: Callable[[], None]


class Checkpoint:
    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        *,
        exactly_once: bool,
        timeout_s: float,
        transaction_deadline_s: float,
        kafka: KafkaHooks,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.timeout_s = timeout_s
        self.kafka = kafka
        self.committer = (
            BackgroundCommitter(producer, timeout_s, kafka.failed, transaction_deadline_s)
            if exactly_once
            else None
        )
        # Partitions sought back since the last consume, so that voiding several batches
        # leaves each partition at the earliest of their first offsets.
        self._rewound: dict[tuple[str, int], int] = {}

    @property
    def pending(self) -> bool:
        """A Kafka commit is running in the background."""
        return self.committer is not None and self.committer.pending

    def begin(self) -> None:
        """Fence earlier instances of this transactional id (exactly once)."""
        if self.committer is not None:
            self.producer.init_transactions(self.timeout_s)

    def new_consume(self) -> None:
        """A new consume (or a rebalance) has moved the consumer: forget the seeks."""
        self._rewound = {}

    def rewind(self, offsets: Offsets) -> None:
        """Seek each partition back to the batch's first offset, so the batch is consumed
        again; a partition already sought back for an earlier batch stays there."""
        for (topic, partition), offset in offsets.first.items():
            if (topic, partition) not in self._rewound:
                self._rewound[topic, partition] = offset
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def commit(
        self,
        offsets: Offsets,
        out: list[OutMessage],
        confirm_state: Callable[[], bool],
        record: Record,
    ) -> bool:
        """Confirm the batch's Redis state, then commit its outputs and offsets. False if
        the batch was rewound (it will be consumed again)."""
        started = time.perf_counter()
        if not confirm_state():
            self.rewind(offsets)
            return False
        confirm_s = time.perf_counter() - started
        if self.committer is None:
            t_commit = time.perf_counter()
            if not self._deliver(out, offsets):
                self.rewind(offsets)
                return False
            record(time.time(), confirm_s, time.perf_counter() - t_commit)
            return True
        # The commit of the batch before ran while this one was scored; it must be
        # settled before this batch's transaction begins.
        if not self.settle():
            self.rewind(offsets)
            return False

        def produce() -> None:
            # Timed inside the transaction, so that produce <= commit (which includes it).
            t_produce = time.perf_counter()
            for message in out:
                produce_waiting(self.producer, *message)
            metrics.stage_seconds.labels("produce").observe(time.perf_counter() - t_produce)

        def recorded(committed_at: float, commit_s: float) -> None:
            record(committed_at, confirm_s, commit_s)

        group = self.consumer.consumer_group_metadata()
        if not self.committer.start(
            produce, offsets.next_offsets(), group, offsets.first, recorded
        ):
            self.rewind(offsets)
            return False
        return True

    def settle(self) -> bool:
        """Wait for the Kafka commit running in the background, if any, and record its
        batch. False if it was aborted: the consumer is rewound to that batch's start."""
        if self.committer is None:
            return True
        try:
            settled = self.committer.settle()
        except CommitStuck as exc:
            # The producer is wedged inside librdkafka; only a new process gets a new one.
            exit_stalled(str(exc))
            raise
        if settled is None:
            return True
        done, waited_s = settled
        if done.aborted:
            self.rewind(Offsets(first=done.first))
            return False
        self.kafka.recovered()
        done.payload(done.committed_at, done.main_thread_s + waited_s)
        return True

    def close(self) -> None:
        if self.committer is not None:
            self.committer.close()

    def _deliver(self, out: list[OutMessage], offsets: Offsets) -> bool:
        """At least once: every output acknowledged, then the offsets committed. False if
        a delivery failed."""
        failed: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _msg: Message) -> None:
            if error is not None:
                failed.append(error)

        t_produce = time.perf_counter()
        for message in out:
            produce_waiting(self.producer, *message, on_delivery=on_delivery)
        metrics.stage_seconds.labels("produce").observe(time.perf_counter() - t_produce)
        undelivered = self.producer.flush(self.timeout_s)
        if failed and any(e.fatal() for e in failed):
            metrics.kafka_errors.labels("fatal").inc()
            raise KafkaException(next(e for e in failed if e.fatal()))
        if failed or undelivered:
            metrics.kafka_errors.labels("delivery").inc()
            logger.warning(
                "outputs not delivered, processing the batch again %s",
                kv(failed=len(failed), undelivered=undelivered, error=failed[:1]),
            )
            return False
        while True:
            try:
                self.consumer.commit(offsets=offsets.next_offsets(), asynchronous=False)
                self.kafka.recovered()
                return True
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise
                if not error.retriable():
                    # Typically a rebalance: the outputs are out, and whoever owns the
                    # partitions now resumes from the last commit (duplicates, no loss).
                    metrics.kafka_errors.labels("commit").inc()
                    logger.warning("offset commit failed %s", kv(error=error))
                    return True
                metrics.kafka_errors.labels("retriable").inc()
                self.kafka.failed(error)
