"""Day alignment of this process's partitions while it catches up on a backlog.

A merchant's features count the transactions of the full UTC days before a transaction's
day, from every partition (scorer/lua/merchant_state.lua). Draining a backlog, the Kafka
client fetches large chunks per partition, so one partition can be scored days ahead of
another; its transactions then miss the other's earlier days at the same merchant, and
their merchant features differ from the trainer's, which reads the stream in event-time
order. So a partition is held back while it is a day ahead:

- a partition's *frontier* is the day below which it has nothing left to deliver: the day
  of the message it is held at, else the day of the last message taken from it (messages
  of a partition come roughly in event-time order);
- a message of day d is taken only if every other assigned partition with input left
  (its position below its high watermark) has a frontier of at least d; otherwise its
  partition is sought back to it and paused, and the message and what follows it in the
  batch are left for later (not in the batch, so not committed);
- before each batch, a held partition is resumed once that holds for its message.

The partition with the lowest frontier can always go on, so nothing waits for good, and
a partition at its end never holds anyone back. Live, partitions have no backlog and
nothing is held; at midnight a partition can wait a few milliseconds for the others.
Partitions of other processes in the group are not seen: with several scorers the
alignment is per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from fraudcore.features import DAY_MS
from scorer import metrics
from scorer.pipeline import Accepted, Rejected

Partition = tuple[str, int]
_DAY_S = DAY_MS / 1000


@dataclass
class _Held:
    offset: int
    day: int


@dataclass
class _Progress:
    start: int  # where reading starts (the committed offset), until the client has a position
    high: int  # the high watermark when assigned; the client's cached one once it has it
    frontier: int | None = None  # the last taken message's day; None: nothing taken yet
    held: _Held | None = None


class DayAlignment:
    def __init__(self, consumer: Consumer, enabled: bool = True, timeout_s: float = 5.0) -> None:
        self.consumer = consumer
        self.enabled = enabled
        self.timeout_s = timeout_s
        self._partitions: dict[Partition, _Progress] = {}

    def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Where each new partition starts and ends (two broker calls per rebalance). A
        partition whose offsets cannot be read holds no one back."""
        if not self.enabled or not partitions:
            return
        try:
            committed = self.consumer.committed(list(partitions), timeout=self.timeout_s)
            for tp in committed:
                marks = self.consumer.get_watermark_offsets(tp, timeout=self.timeout_s)
                if marks is None:  # timed out
                    continue
                low, high = marks
                start = tp.offset if tp.offset is not None and tp.offset >= 0 else low
                self._partitions[tp.topic, tp.partition] = _Progress(int(start), int(high))
        except KafkaException:
            for tp in partitions:
                self._partitions.pop((tp.topic, tp.partition), None)

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions being revoked (still assigned): resumed if held, so that no pause
        outlives the assignment, and whatever was known of them is void."""
        held = []
        for tp in partitions:
            progress = self._partitions.pop((tp.topic, tp.partition), None)
            if progress is not None and progress.held is not None:
                held.append(TopicPartition(tp.topic, tp.partition))
        if held:
            self.consumer.resume(held)
            self._export()

    def release(self) -> None:
        """Resume each held partition whose message may now be taken."""
        resumed = []
        for key, progress in self._partitions.items():
            held = progress.held
            if held is None:
                continue
            (tp,) = self.consumer.position([TopicPartition(*key)])
            # Sought back below the held message (a batch rewound): no longer held there.
            rewound = tp.offset is not None and 0 <= tp.offset < held.offset
            if rewound or self._may_take(key, held.day):
                progress.held = None
                resumed.append(TopicPartition(*key))
        if resumed:
            self.consumer.resume(resumed)
            self._export()

    def admit(
        self, accepted: list[Accepted], rejected: list[Rejected]
    ) -> tuple[list[Accepted], list[Rejected], dict[Partition, int]]:
        """The part of a decoded batch that may be scored now, and where each partition
        whose rest is left for later was sought back to (and paused)."""
        if not self.enabled:
            return accepted, rejected, {}
        cut: dict[Partition, int] = {}  # partition -> first offset left for later
        for a in accepted:
            key = (a.msg.topic() or "", a.msg.partition() or 0)
            progress = self._partitions.get(key)
            if progress is None:
                continue
            if key in cut:
                continue
            offset = a.msg.offset() or 0
            day = int(a.event_ts // _DAY_S)
            ahead = progress.frontier is None or day > progress.frontier
            if ahead and not self._may_take(key, day):
                cut[key] = offset
                progress.held = _Held(offset, day)
                continue
            if ahead:
                progress.frontier = day
        if cut:
            accepted = [a for a in accepted if not left_for_later(a.msg, cut)]
            rejected = [r for r in rejected if not left_for_later(r.msg, cut)]
            for (topic, partition), offset in cut.items():
                tp = TopicPartition(topic, partition, offset)
                self.consumer.pause([tp])
                self.consumer.seek(tp)
            self._export()
        return accepted, rejected, cut

    def _export(self) -> None:
        metrics.partitions_held.set(sum(p.held is not None for p in self._partitions.values()))

    def _may_take(self, key: Partition, day: int) -> bool:
        """Every other partition with input left has nothing left before `day`."""
        for other, progress in self._partitions.items():
            if other == key:
                continue
            frontier = progress.held.day if progress.held is not None else progress.frontier
            if (frontier is None or frontier < day) and self._has_input(other, progress):
                return False
        return True

    def _has_input(self, key: Partition, progress: _Progress) -> bool:
        """Its position is below its high watermark. The client's position moves past
        transaction markers, which take an offset without being a message."""
        if progress.held is not None:
            return True
        tp = TopicPartition(*key)
        marks = self.consumer.get_watermark_offsets(tp, cached=True)
        if marks is not None and marks[1] >= 0:
            progress.high = int(marks[1])
        (at,) = self.consumer.position([tp])
        position = at.offset if at.offset is not None and at.offset >= 0 else progress.start
        return progress.high > position


def left_for_later(msg: Message, cut: dict[Partition, int]) -> bool:
    """The message is at or after where its partition was sought back to."""
    key = (msg.topic() or "", msg.partition() or 0)
    return key in cut and (msg.offset() or 0) >= cut[key]
