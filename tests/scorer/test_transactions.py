"""BackgroundCommitter against a real broker: commits land, one at a time, and a
transaction the broker refuses comes back aborted with the producer usable again."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from scorer.transactions import BackgroundCommitter, CommitStuck
from tests.kafka_util import read_topic


def _never_retriable(error: Any) -> None:
    raise AssertionError(f"no retriable error expected here: {error}")


def _committer(kafka_config: dict[str, Any]) -> tuple[BackgroundCommitter, Producer]:
    producer = Producer({**kafka_config, "transactional.id": f"txtest-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    return BackgroundCommitter(producer, 30, _never_retriable, 60), producer


def _group(kafka_config: dict[str, Any], group_id: str) -> Consumer:
    return Consumer({**kafka_config, "group.id": group_id, "enable.auto.commit": False})


def test_commits_run_in_the_background_one_at_a_time(
    kafka_config: dict[str, Any], new_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    out, source = new_topic("tx-out"), new_topic("tx-source")
    committer, producer = _committer(kafka_config)
    group = _group(kafka_config, unique_name("tx-group"))

    def produce(values: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            for value in values:
                producer.produce(out, value)

        return run

    first = {(source, 0): 0}
    offsets = [TopicPartition(source, 0, 3)]
    assert committer.start(produce([b"a", b"b", b"c"]), offsets, group.consumer_group_metadata(),
                           first, "batch-1")  # fmt: skip
    assert committer.pending
    with pytest.raises(RuntimeError, match="not settled"):
        committer.start(produce([b"x"]), offsets, group.consumer_group_metadata(), first, "x")
    settled = committer.settle()
    assert settled is not None
    commit, waited = settled
    assert commit.payload == "batch-1" and not commit.aborted
    assert commit.committed_at > 0 and waited >= 0
    assert committer.settle() is None

    offsets = [TopicPartition(source, 0, 5)]
    assert committer.start(produce([b"d", b"e"]), offsets, group.consumer_group_metadata(),
                           {(source, 0): 3}, "batch-2")  # fmt: skip
    settled = committer.settle()
    assert settled is not None and not settled[0].aborted

    assert [m.value() for m in read_topic(kafka_config, out, expect=5)] == [
        b"a", b"b", b"c", b"d", b"e",
    ]  # fmt: skip
    (position,) = group.committed([TopicPartition(source, 0)], timeout=10)
    assert position.offset == 5
    group.close()


def test_a_refused_transaction_is_aborted_and_the_next_one_commits(
    kafka_config: dict[str, Any], new_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    # The broker refuses a message over the topic's size limit: the delivery fails, so
    # the transaction cannot commit and must be aborted.
    out = new_topic("tx-small", **{"max.message.bytes": "2000"})
    source = new_topic("tx-source")
    committer, producer = _committer(kafka_config)
    group = _group(kafka_config, unique_name("tx-group"))
    first = {(source, 0): 0}

    def oversized() -> None:
        producer.produce(out, b"kept out")
        producer.produce(out, b"x" * 10_000)

    metadata = group.consumer_group_metadata()
    assert committer.start(oversized, [TopicPartition(source, 0, 2)], metadata, first, "bad")
    settled = committer.settle()
    assert settled is not None
    commit, _ = settled
    assert commit.aborted and commit.first == first

    def fine() -> None:
        producer.produce(out, b"after the abort")

    # librdkafka may need one more abort to bump the producer epoch after a failed
    # delivery (the scorer then simply processes the batch again): a few attempts.
    outcomes = []
    for _ in range(3):
        started = committer.start(fine, [TopicPartition(source, 0, 2)], metadata, first, "good")
        settled = committer.settle() if started else None
        outcomes.append(settled is not None and not settled[0].aborted)
        if outcomes[-1]:
            break
    assert outcomes[-1], outcomes
    # Nothing of the aborted transaction is visible to a read_committed reader.
    assert [m.value() for m in read_topic(kafka_config, out, expect=1)] == [b"after the abort"]
    (position,) = group.committed([TopicPartition(source, 0)], timeout=10)
    assert position.offset == 2
    group.close()


class _WedgedProducer:
    """Stands in for a librdkafka producer whose send_offsets_to_transaction does not
    return (what a broker restart caused: librdkafka #5456). A real broker cannot be made
    to do that on demand; the integration test of the whole recovery is
    tests/scorer/test_faults_kafka.py."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def begin_transaction(self) -> None:
        pass

    def send_offsets_to_transaction(self, *_args: Any) -> None:
        self.released.wait()

    def commit_transaction(self, *_args: Any) -> None:
        pass


def test_a_commit_stuck_in_librdkafka_is_given_up_at_its_deadline() -> None:
    wedged = _WedgedProducer()
    committer = BackgroundCommitter(wedged, 30, _never_retriable, deadline_s=0.5)  # type: ignore[arg-type]
    try:
        assert committer.start(lambda: None, [], None, {("t", 0): 0}, "batch")
        # The call is released only after settle has returned: settle gave up on it.
        with pytest.raises(CommitStuck, match="send_offsets_to_transaction has not returned"):
            committer.settle()
    finally:
        wedged.released.set()
