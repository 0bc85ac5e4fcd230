"""Reading training data from files: the handbook preset and generic CSV/JSONL."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from trainer.labels import Label
from trainer.sources import FileStats, Transaction, read_file
from trainer.timeutil import parse_utc

HANDBOOK = """TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO
0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0
1,2018-04-01 00:02:10,4961,3412,81.51,130,0,1,2
2,2018-04-02 10:00:00,7,12,abc,0,1,0,0
3,2018-04-02 11:00:00,8,13,300.00,0,1,1,1
4,2018-04-03 09:00:00,9,14,12.50,0,2,0,0
"""


def test_handbook_preset_maps_columns_and_derives_labels(tmp_path: Path) -> None:
    path = tmp_path / "transactions.csv.gz"
    with gzip.open(path, "wt") as out:
        out.write(HANDBOOK)
    stats = FileStats()
    events = list(
        read_file(path, label_delay_s=7 * 86400, since=parse_utc("2018-04-01T00:01:00"),
                  until=parse_utc("2018-04-03"), stats=stats)
    )  # fmt: skip
    transactions = [e for e in events if isinstance(e, Transaction)]
    labels = [e for e in events if isinstance(e, Label)]
    assert [t.record["transaction_id"] for t in transactions] == ["1", "3"]
    first = transactions[0]
    assert first.record["user_id"] == "4961" and first.record["merchant_id"] == "3412"
    assert first.record["amount"] == 81.51
    assert first.event_ts == parse_utc("2018-04-01T00:02:10")
    # Only frauds become labels; the label is known a week after the transaction and
    # carries the scenario. Row 0 is before `since` and legit: nothing at all.
    assert [(lb.transaction_id, lb.scenario) for lb in labels] == [
        ("1", "compromised_terminal"), ("3", "high_amount")]  # fmt: skip
    assert labels[0].available_ts == first.event_ts + 7 * 86400
    assert stats.invalid is not None and stats.invalid["schema_violation"] == 1
    assert stats.rows == 5 and stats.transactions == 2 and stats.out_of_range == 2


def test_generic_jsonl_validates_every_row_and_counts_the_bad_ones(tmp_path: Path) -> None:
    good = {"transaction_id": "t1", "user_id": "u", "merchant_id": "m", "amount": 10.0,
            "timestamp": "2024-01-01T10:00:00Z", "country": "DE", "label": "fraud",
            "label_available_at": "2024-01-03T00:00:00Z", "scenario": "card"}  # fmt: skip
    lines = [
        orjson.dumps(good),
        b"{not json",
        orjson.dumps({**good, "transaction_id": "t2", "amount": -5}),  # below the minimum
        orjson.dumps({**good, "transaction_id": "t3", "timestamp": "2024-01-01T10:00:00"}),
        orjson.dumps({**good, "transaction_id": "t4", "label": "maybe"}),
        orjson.dumps([1, 2]),
        orjson.dumps({k: v for k, v in good.items() if k != "user_id"} | {"transaction_id": "t5"}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    stats = FileStats()
    events = list(read_file(path, label_delay_s=3600, stats=stats))
    assert [type(e).__name__ for e in events] == ["Label", "Transaction"]
    label = events[0]
    assert isinstance(label, Label)
    assert label.available_ts == parse_utc("2024-01-03T00:00:00Z") and label.scenario == "card"
    assert stats.invalid == {"unparseable": 1, "schema_violation": 1, "bad_timestamp": 1,
                             "bad_label": 1, "not_an_object": 1, "missing_field": 1}  # fmt: skip


def test_generic_csv_converts_numbers_and_defaults_the_label_delay(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(
        "transaction_id,user_id,merchant_id,amount,timestamp,lat,lon,label\n"
        "t1,u,m,12.5,2024-01-01T10:00:00Z,48.1,11.6,1\n"
        "t2,u,m,7,2024-01-01T11:00:00Z,,,0\n"
    )
    events = list(read_file(path, label_delay_s=3600))
    transactions = [e for e in events if isinstance(e, Transaction)]
    labels = [e for e in events if isinstance(e, Label)]
    assert transactions[0].record["lat"] == 48.1 and "lat" not in transactions[1].record
    assert [lb.label for lb in labels] == ["fraud", "legit"]
    assert labels[0].available_ts == transactions[0].event_ts + 3600
