"""Event-time alignment of the partitions a scorer consumes.

Merchant features count a merchant's transactions on earlier days over every partition.
While a scorer catches up (the backfill of `make up`, a restart after an outage),
librdkafka hands out one partition's messages far ahead of another's: a fetch's worth,
days of event time in the simulated world. A merchant's "yesterday" then misses the
transactions of the partitions still behind, and the features are not the trainer's.

So the scorer pauses a partition whose newest event time runs more than `skew_s` ahead of
the slowest partition that still has messages to read, and resumes it once that one has
caught up: the order Kafka Streams gives its tasks' input by timestamp, coarsely. A
partition read to its end holds nobody back, so in real time nothing is ever paused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from fraudcore.logs import kv

logger = logging.getLogger(__name__)


def plan(
    heads: dict[int, float], behind: set[int], paused: set[int], skew_s: float
) -> tuple[set[int], set[int]]:
    """(to pause, to resume). `heads`: the newest event time read per partition;
    `behind`: the partitions with messages left (their head may be unknown yet)."""
    slowest = min((heads.get(p, -math.inf) for p in behind), default=math.inf)
    ahead = {p for p, head in heads.items() if head > slowest + skew_s}
    return ahead - paused, paused - ahead


class PartitionAligner:
    def __init__(self, skew_s: float) -> None:
        self.skew_s = skew_s
        self.heads: dict[int, float] = {}
        self.paused: set[int] = set()

    def observe(self, partitions_and_times: Iterable[tuple[int, float]]) -> None:
        for partition, event_ts in partitions_and_times:
            if event_ts > self.heads.get(partition, -math.inf):
                self.heads[partition] = event_ts

    def forget(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """On assign and revoke: a partition's head and pause start over. The client
        keeps a partition's pause across a revoke and a later assign, so it is resumed
        here: a partition handed back must not stay paused with nobody to resume it."""
        consumer.resume(partitions)
        for tp in partitions:
            self.heads.pop(tp.partition, None)
            self.paused.discard(tp.partition)

    def align(self, consumer: Consumer) -> None:
        assignment = consumer.assignment()
        if len(assignment) < 2:
            if self.paused:
                self._resume(consumer, assignment, set(self.paused))
            return
        behind = set()
        for tp in consumer.position(assignment):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            # More than a commit marker left. A partition not read from yet (no position)
            # holds nobody back: it may hold nothing, and it joins once it delivers.
            if 0 <= tp.offset < high - 1:
                behind.add(tp.partition)
        to_pause, to_resume = plan(self.heads, behind, self.paused, self.skew_s)
        if to_pause:
            consumer.pause([tp for tp in assignment if tp.partition in to_pause])
            self.paused |= to_pause
            logger.debug("partitions ahead paused %s", kv(partitions=sorted(to_pause)))
        if to_resume:
            self._resume(consumer, assignment, to_resume)

    def _resume(
        self, consumer: Consumer, assignment: list[TopicPartition], which: set[int]
    ) -> None:
        consumer.resume([tp for tp in assignment if tp.partition in which])
        self.paused -= which
        logger.debug("partitions resumed %s", kv(partitions=sorted(which)))
