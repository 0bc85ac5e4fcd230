"""Message contracts: the JSON Schemas in fraudcore/schemas/ and their validation.

The schema files are the single source of truth (external producers such as kcat can
conform to them). They are compiled once with fastjsonschema, and a few checks no JSON
Schema can express (a parseable, plausible RFC 3339 time) are added here. Every failure
is a ContractError naming the field and the reason, never a stack trace.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

SCHEMA_VERSION = 1
TOPIC_SCHEMAS = {
    "transactions": "transactions.v1.json",
    "labels": "labels.v1.json",
    "scores": "scores.v1.json",
    "alerts": "alerts.v1.json",
}
# Earliest event time accepted: anything older is a broken clock, not a late event.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
DEFAULT_MAX_FUTURE_S = 86_400.0
DEFAULT_MAX_MESSAGE_BYTES = 16_384


class ContractError(ValueError):
    """A message that breaks its contract. `reason` is a short stable code (metric label,
    DLQ header); `field` is the offending field when there is one."""

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.detail = detail
        super().__init__(f"{field}: {detail}" if field else detail)


@cache
def load_schema(contract: str) -> dict[str, Any]:
    """The JSON Schema of a contract ('transactions', 'labels', 'scores', 'alerts')."""
    text = resources.files("fraudcore.schemas").joinpath(TOPIC_SCHEMAS[contract]).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _compiled(contract: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(contract))


def known_fields(contract: str) -> frozenset[str]:
    return frozenset(load_schema(contract)["properties"])


def _field_of(exc: fastjsonschema.JsonSchemaValueException) -> str | None:
    path = [str(p) for p in (exc.path or [])[1:]]  # drop the leading "data"
    return ".".join(path) or None


def validate(contract: str, record: Any) -> None:
    """Raise ContractError if `record` breaks the contract's JSON Schema."""
    try:
        _compiled(contract)(record)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = _field_of(exc)
        detail = exc.message.replace(exc.name + " ", "", 1) if exc.name else exc.message
        reason = "missing_field" if "must contain" in exc.message else "schema_violation"
        if reason == "missing_field":
            # fastjsonschema says "data must contain ['user_id'] properties"
            missing = exc.message.split("[", 1)[-1].split("]", 1)[0].replace("'", "")
            raise ContractError(reason, "required field is missing", missing.strip()) from None
        raise ContractError(reason, detail, field) from None


def parse_time(value: str, field: str = "timestamp") -> float:
    """RFC 3339 UTC string -> epoch seconds; ContractError naming `field` otherwise."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ContractError("bad_timestamp", f"not an RFC 3339 time: {value!r}", field) from None
    if parsed.tzinfo is None or parsed.utcoffset() != UTC.utcoffset(None):
        raise ContractError("bad_timestamp", f"must be UTC (Z or +00:00): {value!r}", field)
    return parsed.timestamp()


def format_time(epoch_s: float) -> str:
    """Epoch seconds -> RFC 3339 UTC with milliseconds and a Z."""
    return (
        datetime.fromtimestamp(epoch_s, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def decode_transaction(
    raw: bytes | None,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
    now: float | None = None,
) -> tuple[dict[str, Any], float]:
    """Bytes from the transactions topic -> (transaction, event time in epoch seconds).

    Raises ContractError with reason one of: empty, oversized, unparseable, not_an_object,
    missing_field, schema_violation, bad_timestamp, bad_amount.
    """
    if raw and len(raw) > max_bytes:
        raise ContractError("oversized", f"{len(raw)} bytes is over the {max_bytes}-byte limit")
    record = decode_record(raw, "transactions")
    amount = record["amount"]
    if isinstance(amount, bool) or not math.isfinite(amount):
        raise ContractError("bad_amount", f"must be a finite number, got {amount!r}", "amount")
    event_ts = parse_time(record["timestamp"])
    limit = (time.time() if now is None else now) + max_future_s
    if not EARLIEST_EVENT_TIME <= event_ts <= limit:
        raise ContractError(
            "bad_timestamp",
            f"{record['timestamp']} is outside the plausible range "
            f"[2000-01-01, now + {max_future_s:.0f}s]",
            "timestamp",
        )
    return record, event_ts


def decode_record(raw: bytes | None, contract: str) -> dict[str, Any]:
    """Message bytes -> a JSON object that passes the contract's schema.

    Raises ContractError with reason empty, unparseable, not_an_object, missing_field or
    schema_violation."""
    if not raw:
        raise ContractError("empty", "message has no value")
    try:
        record = orjson.loads(raw)  # strict RFC 8259: NaN and Infinity do not parse
    except orjson.JSONDecodeError as exc:
        raise ContractError("unparseable", f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ContractError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    validate(contract, record)
    return record


def decode_label(raw: bytes | None) -> tuple[dict[str, Any], float]:
    """Bytes from the labels topic -> (label, available_at in epoch seconds)."""
    record = decode_record(raw, "labels")
    return record, parse_time(record["available_at"], "available_at")
