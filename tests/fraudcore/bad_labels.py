"""A corpus of bad `labels` messages, each with the reason and field its rejection names.

Put through every reader of the labels topic: the contract itself
(tests/fraudcore/test_bad_labels.py), the scorer's label folder (tests/scorer/test_labels.py)
and the trainer's reader (tests/trainer/test_kafka_source.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

GOOD: dict[str, Any] = {
    "schema_version": 1, "transaction_id": "t-good", "user_id": "u-1", "merchant_id": "m-1",
    "label": "fraud", "source": "chargeback", "available_at": "2026-11-20T10:00:00Z",
}  # fmt: skip


class BadLabel(NamedTuple):
    name: str
    reason: str
    field: str | None
    raw: bytes | None


def label_with(**changes: Any) -> bytes:
    return orjson.dumps({**GOOD, **changes})


def _without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in GOOD.items() if k != name})


CORPUS: tuple[BadLabel, ...] = (
    BadLabel("no value (tombstone)", "empty", None, None),
    BadLabel("empty bytes", "empty", None, b""),
    BadLabel("not JSON", "unparseable", None, b"chargeback for t-1"),
    BadLabel("truncated JSON", "unparseable", None, label_with()[:-7]),
    BadLabel("byte order mark", "unparseable", None, b"\xef\xbb\xbf" + label_with()),
    BadLabel("invalid UTF-8", "unparseable", None, label_with(user_id="u").replace(b'"u"', b'"\xe9"')),
    BadLabel("NaN in an extra field", "unparseable", "weight",
             label_with()[:-1] + b',"weight":NaN}'),
    BadLabel("1e400 in an extra field", "unparseable", "weight",
             label_with()[:-1] + b',"weight":1e400}'),
    BadLabel("nested 100,000 deep", "unparseable", None, b"[" * 100_000 + b"]" * 100_000),
    BadLabel("a JSON array", "not_an_object", None, b"[" + label_with() + b"]"),
    BadLabel("a JSON string", "not_an_object", None, b'"fraud"'),
    BadLabel("JSON null", "not_an_object", None, b"null"),
    BadLabel("no label", "missing_field", "label", _without("label")),
    BadLabel("no transaction_id", "missing_field", "transaction_id", _without("transaction_id")),
    BadLabel("no available_at", "missing_field", "available_at", _without("available_at")),
    BadLabel("label not in the enum", "schema_violation", "label", label_with(label="maybe")),
    BadLabel("label null", "schema_violation", "label", label_with(label=None)),
    BadLabel("label as a number", "schema_violation", "label", label_with(label=1)),
    BadLabel("unknown source", "schema_violation", "source", label_with(source="rumour")),
    BadLabel("schema_version 2", "schema_violation", "schema_version", label_with(schema_version=2)),
    BadLabel("schema_version as text", "schema_violation", "schema_version",
             label_with(schema_version="1")),
    BadLabel("schema_version true", "schema_violation", "schema_version",
             label_with(schema_version=True)),
    BadLabel("empty transaction_id", "schema_violation", "transaction_id",
             label_with(transaction_id="")),
    BadLabel("transaction_id of 200 characters", "schema_violation", "transaction_id",
             label_with(transaction_id="t" * 200)),
    BadLabel("transaction_id as a number", "schema_violation", "transaction_id",
             label_with(transaction_id=42)),
    BadLabel("available_at in words", "schema_violation", "available_at",
             label_with(available_at="last tuesday")),
    BadLabel("available_at without a zone", "schema_violation", "available_at",
             label_with(available_at="2026-11-20T10:00:00")),
    BadLabel("available_at not UTC", "schema_violation", "available_at",
             label_with(available_at="2026-11-20T10:00:00+02:00")),
    BadLabel("available_at on 30 February", "schema_violation", "available_at",
             label_with(available_at="2026-02-30T10:00:00Z")),
    BadLabel("available_at in year 0", "bad_timestamp", "available_at",
             label_with(available_at="0000-01-01T00:00:00Z")),
    BadLabel("available_at as epoch seconds", "schema_violation", "available_at",
             label_with(available_at=1_795_168_800)),
    BadLabel("transaction_time in words", "schema_violation", "transaction_time",
             label_with(transaction_time="earlier")),
    BadLabel("scenario of 100 characters", "schema_violation", "scenario",
             label_with(scenario="s" * 100)),
    BadLabel("note of 3,000 characters", "schema_violation", "note", label_with(note="n" * 3000)),
)  # fmt: skip
