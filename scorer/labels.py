"""The label folder: a small consumer, beside the scoring loop, that folds `labels` into
the merchants' fraud records in Redis.

Labels are idempotent in Redis (the first fraud label of a transaction wins), so plain
at-least-once is enough here: offsets are committed after the batch is folded, and a
redelivered label changes nothing. Invalid labels go to the labels dead-letter topic.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from fraudcore.contracts import ContractError, decode_label
from fraudcore.kafka import consumer_config, producer_config
from fraudcore.logs import kv, where
from scorer import metrics
from scorer.feature_store import FeatureStore
from scorer.pipeline import Rejected, dead_letter
from scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)


class LabelFolder:
    def __init__(
        self, settings: ScorerSettings, store: FeatureStore, stop: threading.Event
    ) -> None:
        self.settings = settings
        self.store = store
        self.stop = stop
        self.thread = threading.Thread(target=self.run, name="label-folder", daemon=True)
        self.failed: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        base = self.settings.client_config()
        consumer = Consumer(consumer_config(base, self.settings.scorer_labels_group_id))
        producer = Producer(producer_config(base))
        consumer.subscribe([self.settings.topic_labels])
        try:
            while not self.stop.is_set():
                msgs = consumer.consume(500, 0.5)
                if msgs:
                    self._fold(msgs, consumer, producer)
        except BaseException as exc:  # surfaced through /ready and the main loop
            self.failed = exc
            logger.exception("label folder stopped")
        finally:
            consumer.close()
            producer.flush(5)

    def _fold(self, msgs: list[Message], consumer: Consumer, producer: Producer) -> None:
        batch: list[tuple[str, str, str, int]] = []
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("labels consume error %s", kv(error=error))
                continue
            try:
                label, available_ts = decode_label(msg.value())
            except ContractError as exc:
                letter = dead_letter(Rejected(msg, exc), self.settings.topic_labels_dlq)
                producer.produce(letter.topic, letter.value, letter.key, headers=letter.headers)
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
            except Exception as exc:
                attempt += 1
                metrics.redis_errors.inc()
                logger.warning("folding labels failed, retrying %s", kv(attempt=attempt, error=exc))
                time.sleep(min(2.0, 0.1 * attempt))
        else:
            return  # stopping: not committed, the labels come again next time
        for item in batch:
            metrics.labels_folded.labels(item[2]).inc()
        producer.flush(10)  # dead letters are durable before their offsets are committed
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise
