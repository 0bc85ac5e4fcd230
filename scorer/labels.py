"""The label folder: a small consumer, beside the scoring loop, that folds `labels` into
the merchants' fraud records in Redis.

Labels are idempotent in Redis (the first fraud label of a transaction wins), so plain
at-least-once is enough here: offsets are committed after the batch is folded, and a
redelivered label changes nothing. Invalid labels go to the labels dead-letter topic.
If the folder cannot go on (a fatal Kafka error), it stops the scorer, which exits
non-zero so that a supervisor restarts both.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fraudcore.contracts import ContractError, decode_label
from fraudcore.dead_letter import dead_letter_limit
from fraudcore.kafka import consumer_config, produce_waiting, producer_config
from fraudcore.logs import kv, where
from scorer import metrics
from scorer.feature_store import FeatureStore
from scorer.pipeline import Rejected, dead_letter
from scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)

DEAD_LETTER_FLUSH_S = 10.0


class LabelFolder:
    def __init__(
        self, settings: ScorerSettings, store: FeatureStore, stop: threading.Event
    ) -> None:
        self.settings = settings
        self.store = store
        self.stop = stop
        self.thread = threading.Thread(target=self.run, name="label-folder", daemon=True)
        # What stopped the folder, if anything did: the process then exits non-zero.
        self.failed: BaseException | None = None
        # Set once the labels published before the start are folded (and committed, by
        # this folder or another of the group).
        self.caught_up = threading.Event()
        self._targets: list[TopicPartition] = []

    def start(self) -> None:
        self.thread.start()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Block (bounded, logged) until the labels published before the start are
        folded, so that the first transactions scored see the fraud reports of their
        time; returns whether they were."""
        started = time.monotonic()
        while not self.caught_up.wait(0.5):
            if self.stop.is_set() or time.monotonic() - started >= timeout_s:
                if not self.stop.is_set():
                    logger.warning(
                        "labels not folded yet, scoring anyway %s", kv(waited_s=timeout_s)
                    )
                return False
        logger.info(
            "scoring starts %s", kv(labels_folded_in_s=round(time.monotonic() - started, 1))
        )
        return True

    def run(self) -> None:
        base = self.settings.client_config()
        consumer = Consumer(consumer_config(base, self.settings.scorer_labels_group_id))
        producer = Producer(producer_config(base))
        try:
            limit = dead_letter_limit(AdminClient(base), self.settings.topic_labels_dlq)
            consumer.subscribe([self.settings.topic_labels])
            self._targets = self._end_offsets(consumer)
            self._check_caught_up(consumer)
            while not self.stop.is_set():
                msgs = consumer.consume(500, 0.5)
                if msgs:
                    self._fold(msgs, consumer, producer, limit)
                if not self.caught_up.is_set():
                    self._check_caught_up(consumer)
        except BaseException as exc:
            self.failed = exc
            logger.exception("label folder stopped, stopping the scorer")
            self.stop.set()
        finally:
            consumer.close()
            producer.flush(5)

    def _end_offsets(self, consumer: Consumer) -> list[TopicPartition]:
        topic = self.settings.topic_labels
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = []
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends.append(TopicPartition(topic, p, high))
        logger.info(
            "folding the labels published before the start %s",
            kv(topic=topic, labels_up_to=sum(t.offset for t in ends)),
        )
        return ends

    def _check_caught_up(self, consumer: Consumer) -> None:
        """The group's committed offsets have reached the end offsets taken at start."""
        pending = [t for t in self._targets if t.offset > 0]
        if pending:
            try:
                answer = consumer.committed(
                    [TopicPartition(t.topic, t.partition) for t in pending], timeout=10
                )
            except KafkaException as exc:
                # The group coordinator moving or still loading (a broker just started or
                # restarted): asked again after the next poll.
                if exc.args[0].fatal():
                    raise
                logger.info("labels' committed offsets not readable yet %s", kv(error=exc))
                return
            committed = {t.partition: t.offset for t in answer}
            if any(committed.get(t.partition, -1) < t.offset for t in pending):
                return
        self.caught_up.set()
        logger.info("labels published before the start are folded")

    def _fold(
        self, msgs: list[Message], consumer: Consumer, producer: Producer, limit: int
    ) -> None:
        batch: list[tuple[str, str, str, int]] = []
        first: dict[tuple[str, int], int] = {}
        undelivered: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _msg: Message) -> None:
            if error is not None:
                undelivered.append(error)

        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("labels consume error %s", kv(error=error))
                continue
            first.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
            try:
                label, available_ts = decode_label(msg.value())
            except ContractError as exc:
                letter = dead_letter(Rejected(msg, exc), self.settings.topic_labels_dlq, limit)
                produce_waiting(producer, *letter, on_delivery=on_delivery)
                metrics.dead_lettered.labels(f"label_{exc.reason}").inc()
                logger.info(
                    "label dead-lettered %s",
                    kv(at=where(msg.topic() or "", msg.partition() or 0, msg.offset() or 0),
                       reason=exc.reason, field=exc.field),
                )  # fmt: skip
                continue
            batch.append(
                (
                    label["merchant_id"],
                    label["transaction_id"],
                    label["label"],
                    round(available_ts * 1000),
                )
            )
        attempt = 0
        while not self.stop.is_set():
            try:
                self.store.fold_labels(batch)
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                attempt += 1
                metrics.redis_errors.inc()
                logger.warning("folding labels failed, retrying %s", kv(attempt=attempt, error=exc))
                time.sleep(min(2.0, 0.1 * attempt))
        else:
            return  # stopping: not committed, the labels come again next time
        for item in batch:
            metrics.labels_folded.labels(item[2]).inc()
        # Dead letters are durable before their offsets are committed; if Kafka did not
        # take them all, the batch is read again (folding it twice changes nothing).
        remaining = producer.flush(DEAD_LETTER_FLUSH_S)
        if remaining or undelivered:
            metrics.kafka_errors.labels("delivery").inc()
            logger.warning(
                "label dead letters not delivered, reading the batch again %s",
                kv(undelivered=remaining, failed=len(undelivered), error=undelivered[:1]),
            )
            for (topic, partition), offset in first.items():
                consumer.seek(TopicPartition(topic, partition, offset))
            return
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise
            if error.code() != KafkaError._NO_OFFSET:
                # Not committed now (e.g. the coordinator moved): the next batch's commit
                # carries these offsets too, and folding a label twice changes nothing.
                metrics.kafka_errors.labels("commit").inc()
                logger.warning(
                    "labels commit failed, committed with the next batch %s", kv(error=error)
                )
