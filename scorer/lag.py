"""The group's lag on the partitions this instance owns: log end minus committed offset.

Measured on a thread and a Kafka client of its own, every `interval_s`, so that it stays
current when the scoring loop is stuck: a stalled scorer shows as lag that grows while
commits stay flat (alert ScorerStalled), which a gauge updated by the loop itself could
never show. The committed offsets are the ones the loop's Kafka transactions committed,
so this is exactly the work that is not done yet (plus one commit marker per partition
when the input topic is itself written in transactions).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from fraudcore.logs import kv
from scorer import metrics

logger = logging.getLogger(__name__)


class LagProbe:
    def __init__(self, client_config: dict[str, Any], group_id: str, interval_s: float) -> None:
        # Never subscribes: it only asks for the group's committed offsets and the log ends.
        self._config = {**client_config, "group.id": group_id, "enable.auto.commit": False}
        self._interval_s = interval_s
        self._owned: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._owned |= {(p.topic, p.partition) for p in partitions}

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        with self._lock:
            for p in partitions:
                self._owned.discard((p.topic, p.partition))
                with contextlib.suppress(KeyError):
                    metrics.consumer_lag.remove(p.topic, str(p.partition))

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            while not self._closed.wait(self._interval_s):
                with self._lock:
                    owned = sorted(self._owned)
                if owned:
                    self._measure(consumer, owned)
        finally:
            consumer.close()

    def _measure(self, consumer: Consumer, owned: list[tuple[str, int]]) -> None:
        timeout = self._interval_s
        try:
            committed = consumer.committed([TopicPartition(t, p) for t, p in owned], timeout)
            for tp in committed:
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
                done = tp.offset if tp.offset >= 0 else low  # nothing committed yet
                with self._lock:
                    if (tp.topic, tp.partition) in self._owned:
                        metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(high - done)
        except KafkaException as exc:
            # The gauge keeps its last value; Kafka being away shows elsewhere.
            logger.debug("lag probe failed %s", kv(error=exc))
