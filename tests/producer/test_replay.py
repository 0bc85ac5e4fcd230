"""Replays into a real Kafka: a slice of the Fraud Detection Handbook file mapped and
labelled right, and bad rows dead-lettered with their reason, never dropped."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from fraudcore.contracts import decode_label, decode_transaction
from fraudcore.datasets import handbook_path
from producer.app import RunOptions, execute
from producer.replay import ReplaySource, configure
from producer.timeparse import parse_instant
from tests.kafka_util import read_topic
from tests.producer.helpers import DAY, headers_of, settings_for

SINCE = "2018-04-10"  # a slice with frauds of all three handbook scenarios
ROWS = 2000
NAMES = {"1": "high_amount", "2": "compromised_terminal", "3": "compromised_customer"}


def _handbook() -> Path:
    try:
        return handbook_path()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


def _handbook_rows() -> list[dict[str, str]]:
    """The slice, read straight from the CSV (the file is in time order)."""
    rows = []
    with gzip.open(_handbook(), "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["TX_DATETIME"] >= SINCE:
                rows.append(row)
                if len(rows) == ROWS:
                    break
    return rows


def test_handbook_slice_is_mapped_and_labelled_right(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    settings = settings_for(kafka_config, new_topic)
    config = configure(_handbook(), "handbook", since=parse_instant(SINCE), limit=ROWS)
    summary = execute(settings, RunOptions(replay=config))
    assert summary.ok and summary.transactions == ROWS and summary.dead_lettered == 0

    expected = {r["TRANSACTION_ID"]: r for r in _handbook_rows()}
    txs = read_topic(kafka_config, settings.topic_transactions)
    assert len(txs) == ROWS
    times = {}
    for msg in txs:
        tx, event_ts = decode_transaction(msg.value())
        row = expected[tx["transaction_id"]]
        assert set(tx) == {
            "schema_version",
            "transaction_id",
            "user_id",
            "merchant_id",
            "amount",
            "timestamp",
        }
        assert msg.key() == tx["user_id"].encode() == row["CUSTOMER_ID"].encode()
        assert tx["merchant_id"] == row["TERMINAL_ID"]
        assert tx["amount"] == float(row["TX_AMOUNT"])
        wanted = datetime.strptime(row["TX_DATETIME"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        assert event_ts == wanted.timestamp()
        times[tx["transaction_id"]] = event_ts

    labels = [decode_label(m.value()) for m in read_topic(kafka_config, settings.topic_labels)]
    assert len(labels) == ROWS
    frauds = {r["TRANSACTION_ID"]: r for r in expected.values() if r["TX_FRAUD"] == "1"}
    assert len(frauds) > 0
    assert sum(label["label"] == "fraud" for label, _ in labels) == len(frauds)
    for label, available_at in labels:
        row = expected[label["transaction_id"]]
        assert label["source"] == "simulator"
        assert available_at == times[label["transaction_id"]] + 7 * DAY
        if row["TX_FRAUD"] == "1":
            assert label["scenario"] == NAMES[row["TX_FRAUD_SCENARIO"]]
        else:
            assert label["label"] == "legit" and "scenario" not in label
    assert {label.get("scenario") for label, _ in labels} == {None, *NAMES.values()}


GOOD = [
    ("t1", "2024-03-01 10:00:00", "card-a", "shop-1", "12.50", "0"),
    ("t2", "2024-03-01 10:05:00", "card-b", "shop-2", "99.00", "1"),
    ("t3", "2024-03-01 10:06:00", "card-a", "shop-1", "7.10", "0"),
]
BAD = [  # (row, reason, field)
    (("b1", "2024-03-01 10:07:00", "card-c", "shop-3", "-5.00", "0"), "schema_violation", "amount"),
    (("b2", "01/03/2024 10:08", "card-c", "shop-3", "5.00", "0"), "bad_timestamp", "timestamp"),
    (("b3", "2024-03-01 10:09:00", "", "shop-3", "5.00", "0"), "missing_field", "user_id"),
    (("b4", "2024-03-01 10:10:00", "card-d", "shop-3", "lots", "0"), "bad_amount", "amount"),
    (("b5", "2024-03-01 10:11:00", "card-d", "shop-3", "3.00", "maybe"), "bad_label", "label"),
]
MAP = {
    "transaction_id": "id",
    "timestamp": "when",
    "user_id": "card",
    "merchant_id": "shop",
    "amount": "eur",
    "label": "is_fraud",
}


def test_bad_rows_go_to_the_dlq_with_their_reason_and_the_replay_goes_on(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    rows = [GOOD[0], BAD[0][0], GOOD[1], *(b[0] for b in BAD[1:]), GOOD[2]]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "when", "card", "shop", "eur", "is_fraud"])
        writer.writerows(rows)
    settings = settings_for(kafka_config, new_topic)
    config = configure(path, mapping=MAP, label_delay_s=3600.0)
    summary = execute(settings, RunOptions(replay=config))
    assert summary.transactions == len(GOOD) and summary.dead_lettered == len(BAD)
    assert summary.validation_failures == len(BAD)

    txs = [
        decode_transaction(m.value())[0]
        for m in read_topic(kafka_config, settings.topic_transactions)
    ]
    assert sorted(t["transaction_id"] for t in txs) == ["t1", "t2", "t3"]
    labels = [decode_label(m.value())[0] for m in read_topic(kafka_config, settings.topic_labels)]
    assert {(lb["transaction_id"], lb["label"]) for lb in labels} == {
        ("t1", "legit"),
        ("t2", "fraud"),
        ("t3", "legit"),
    }
    assert all(lb["source"] == "chargeback" for lb in labels)

    dlq = read_topic(kafka_config, settings.topic_transactions_dlq)
    assert len(dlq) == len(BAD)
    line_of = {row[0]: i + 2 for i, row in enumerate(rows)}  # line 1 is the header
    seen = set()
    for msg in dlq:
        headers = headers_of(msg)
        row = next(csv.reader(io.StringIO((msg.value() or b"").decode())))
        expected = next(b for b in BAD if b[0][0] == row[0])
        assert tuple(row) == expected[0]  # the row as it was read
        assert (headers["reason"], headers["field"]) == expected[1:]
        assert headers["detail"] and headers["source"] == "producer"
        assert headers["source_file"] == str(path)
        assert int(headers["source_line"]) == line_of[row[0]]
        seen.add(row[0])
    assert seen == {b[0][0] for b in BAD}


def test_jsonl_gz_replay_with_a_broken_line_and_a_time_range(
    kafka_config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl.gz"
    lines = [
        orjson.dumps(
            {
                "tid": f"j{i}",
                "ts": f"2024-05-0{i}T12:00:00Z",
                "u": 100 + i,
                "m": "shop",
                "amt": i * 1.5,
            }
        )
        for i in range(1, 7)
    ]
    lines.insert(3, b'{"tid": "broken", ')
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    settings = settings_for(kafka_config, new_topic)
    config = configure(
        path,
        mapping={
            "transaction_id": "tid",
            "timestamp": "ts",
            "user_id": "u",
            "merchant_id": "m",
            "amount": "amt",
        },
        since=parse_instant("2024-05-02"),
        until=parse_instant("2024-05-06"),
    )
    source = ReplaySource(config)
    items = list(source)  # the same file, read without Kafka
    assert [type(i).__name__ for i in items].count("Rejected") == 1
    assert source.rows_read == 7 and source.rows_skipped == 2  # j1 and j6 out of range
    assert source.bytes_read() == source.total_bytes == path.stat().st_size
    summary = execute(settings, RunOptions(replay=config))
    assert summary.transactions == 4 and summary.dead_lettered == 1  # j2..j5, the broken line
    txs = [
        decode_transaction(m.value())[0]
        for m in read_topic(kafka_config, settings.topic_transactions)
    ]
    assert sorted(t["transaction_id"] for t in txs) == ["j2", "j3", "j4", "j5"]
    assert {t["user_id"] for t in txs} == {"102", "103", "104", "105"}
    assert read_topic(kafka_config, settings.topic_labels) == []  # no label column mapped
    (dead,) = read_topic(kafka_config, settings.topic_transactions_dlq)
    headers = headers_of(dead)
    assert headers["reason"] == "unparseable" and headers["source_line"] == "4"
    assert dead.value() == b'{"tid": "broken", '


def test_mapping_mistakes_are_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="required field"):
        configure(path, mapping={"transaction_id": "a"})
    with pytest.raises(ValueError, match="unknown target"):
        configure(path, mapping={**MAP, "colour": "a"})
    with pytest.raises(ValueError, match="not in the header: transaction_id=id"):
        list(ReplaySource(configure(path, mapping=MAP)))
    with pytest.raises(ValueError, match="unknown preset"):
        configure(path, "nope")
