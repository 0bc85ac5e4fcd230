"""Reading the topics: up to the end offsets of the start, committed data only, merged
by event time across partitions while each partition keeps its own order."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import orjson
from confluent_kafka import Producer

from fraudcore.contracts import format_time
from tests.fraudcore.bad_labels import CORPUS, GOOD, label_with
from trainer.kafka_source import read_labels, read_transactions

T0 = 1_700_000_000.0


def _tx(tid: str, ts: float) -> bytes:
    return orjson.dumps({
        "schema_version": 1, "transaction_id": tid, "user_id": f"u-{tid}", "merchant_id": "m",
        "amount": 5.0, "timestamp": format_time(ts), "device_id": "d1", "note": "extra field",
    })  # fmt: skip


def test_partitions_merge_by_event_time_keeping_partition_order(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic("trainer-merge", partitions=2)
    producer = Producer(dict(kafka_config))
    # Partition 0 holds a late event (p0-c at T0+5 after T0+30): it must stay after p0-b.
    for tid, ts in (("p0-a", T0 + 10), ("p0-b", T0 + 30), ("p0-c", T0 + 5)):
        producer.produce(topic, _tx(tid, ts), partition=0)
    for tid, ts in (("p1-a", T0 + 10), ("p1-b", T0 + 20), ("p1-c", T0 + 40)):
        producer.produce(topic, _tx(tid, ts), partition=1)
    producer.produce(topic, b"{broken", partition=1)
    producer.produce(topic, _tx("old", T0 - 1000), partition=1)
    assert producer.flush(10) == 0

    merged, count, stats = read_transactions(dict(kafka_config), topic, since=T0)
    order = [t.record["transaction_id"] for t in merged]
    # Ties (T0+10) go to the lower partition; p0-c waits behind p0-b.
    assert order == ["p0-a", "p1-a", "p1-b", "p0-b", "p0-c", "p1-c"]
    assert count == 6 and stats.out_of_range == 1 and stats.invalid == {"unparseable": 1}
    # Only the fields the features use are kept in memory.
    first = next(iter(read_transactions(dict(kafka_config), topic, since=T0)[0]))
    assert "note" not in first.record and first.record["device_id"] == "d1"


def test_only_committed_messages_are_read(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic("trainer-labels-txn", partitions=1)
    producer = Producer({**kafka_config, "transactional.id": f"trainer-test-{uuid.uuid4()}"})
    producer.init_transactions(10)

    def label(tid: str) -> bytes:
        return orjson.dumps({
            "schema_version": 1, "transaction_id": tid, "user_id": "u", "merchant_id": "m",
            "label": "fraud", "source": "analyst", "available_at": format_time(T0),
        })  # fmt: skip

    for tids, commit in ((["kept-1", "kept-2"], True), (["aborted"], False), (["kept-3"], True)):
        producer.begin_transaction()
        for tid in tids:
            producer.produce(topic, label(tid))
        if commit:
            producer.commit_transaction(10)
        else:
            producer.abort_transaction(10)

    labels, stats = read_labels(dict(kafka_config), topic)
    assert [lb.transaction_id for lb in labels] == ["kept-1", "kept-2", "kept-3"]
    assert stats.invalid == {}


def test_tail_reads_only_the_newest_messages_of_each_partition(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic("trainer-tail", partitions=2)
    producer = Producer(dict(kafka_config))
    for i in range(10):
        producer.produce(topic, _tx(f"t{i}", T0 + i), partition=i % 2)
    assert producer.flush(10) == 0
    merged, count, _ = read_transactions(dict(kafka_config), topic, tail=4)
    # Two per partition: the last two of partition 0 (t6, t8) and of partition 1 (t7, t9).
    assert [t.record["transaction_id"] for t in merged] == ["t6", "t7", "t8", "t9"]
    assert count == 4


def test_the_label_reader_counts_every_bad_label_and_keeps_the_good(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic("trainer-bad-labels", partitions=2)
    producer = Producer({**kafka_config, "message.max.bytes": 2_000_000})
    for i, bad in enumerate(CORPUS):
        producer.produce(topic, bad.raw, f"bad-{i}".encode())
        producer.produce(topic, orjson.dumps({**GOOD, "transaction_id": f"good-{i}"}))
    # As large as the broker takes (its message.max.bytes is 1,048,588 by default).
    huge = label_with(note="n" * 1_048_000)
    producer.produce(topic, huge, b"huge")
    assert producer.flush(30) == 0

    labels, stats = read_labels(dict(kafka_config), topic)
    assert sorted(label.transaction_id for label in labels) == sorted(
        f"good-{i}" for i in range(len(CORPUS))
    )
    expected = Counter(bad.reason for bad in CORPUS)
    expected["schema_violation"] += 1  # the huge one: its note is over 2,000 characters
    assert stats.invalid == expected
    assert stats.messages == 2 * len(CORPUS) + 1 and stats.decoded == len(CORPUS)
