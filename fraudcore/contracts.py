"""Message contracts: the JSON Schemas in fraudcore/schemas/ and their validation.

The schema files are the single source of truth (external producers such as kcat can
conform to them). They are compiled once with fastjsonschema, and a few checks no JSON
Schema can express (a parseable, plausible RFC 3339 time) are added here. Every failure
is a ContractError naming the field and the reason, never a stack trace.

Transactions, the hot path, first go through a fast check built from the same schema
(`_fast_check`): it only ever answers "certainly valid" or "not sure", and "not sure"
takes the full fastjsonschema path, which also writes every error. So a fast "valid" must
imply the full path's "valid"; anything the fast check does not understand disables it.
"""

from __future__ import annotations

import json
import math
import re
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


Check = Callable[[Any], bool]
# Keywords that only document; every other keyword must be understood or the fast check
# is off for the whole contract.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples"})


@cache
def _fast_check(contract: str) -> Check | None:
    return build_fast_check(load_schema(contract))


def build_fast_check(schema: dict[str, Any]) -> Check | None:
    """A predicate over a parsed JSON object: True only if `schema` accepts it (False =
    not sure). None when the schema uses something it does not mirror.

    Generated as straight-line code from the schema, like fastjsonschema does, but with
    no error reporting, which is what makes it cheap."""
    outer = set(schema) - _ANNOTATIONS
    if schema.get("type") != "object" or not outer <= _OBJECT_KEYWORDS:
        return None
    closed = schema.get("additionalProperties", True) is False
    if not isinstance(schema.get("additionalProperties", True), bool):
        return None
    required = frozenset(schema.get("required", ()))
    constants: dict[str, Any] = {
        "REQUIRED": required,
        "MISSING": object(),
        "is_utc_time": _is_utc_time,
        "pattern_broken": _pattern_broken,
    }
    lines = ["def check(r):", "    if not REQUIRED <= r.keys():", "        return False"]
    if closed:
        lines.append(f"    known = {len(required & set(schema.get('properties', {})))}")
    for name, definition in schema.get("properties", {}).items():
        tests = _property_tests(definition, constants)
        if tests is None:
            return None
        if name in required:
            indent = "    "
            lines.append(f"    v = r[{name!r}]")
        else:
            indent = "        "
            lines.append(f"    v = r.get({name!r}, MISSING)")
            lines.append("    if v is not MISSING:")
            if closed:
                lines.append("        known += 1")
        lines += [f"{indent}if {test}:\n{indent}    return False" for test in tests]
    lines.append("    return known == len(r)" if closed else "    return True")
    exec("\n".join(lines), constants)  # our own schema; values travel as named constants
    check: Check = constants["check"]
    return check


# Patterns every string passing _is_utc_time matches (it ends in Z or +00:00 and has no
# newline), so a date-time field need not search them again.
_IMPLIED_BY_UTC_TIME = frozenset({r"(Z|\+00:00)$"})


def _pattern_broken(seen: set[str], regex: re.Pattern[str], value: str) -> bool:
    # fastjsonschema searches with every `$` read as `\Z`; without a newline in the
    # string both mean the same, so strings with one take the full path.
    if "\n" in value or regex.search(value) is None:
        return True
    # Patterned fields (currency, country) take few values: remember the good ones.
    if len(seen) < 256 and len(value) <= 64:
        seen.add(value)
    return False


_OBJECT_KEYWORDS = frozenset({"type", "required", "properties", "additionalProperties"})
_STRING_KEYWORDS = frozenset(
    {"type", "minLength", "maxLength", "pattern", "format", "enum", "const"}
)
_NUMBER_KEYWORDS = frozenset({"type", "minimum", "maximum", "const"})


def _property_tests(definition: dict[str, Any], constants: dict[str, Any]) -> list[str] | None:
    """Python conditions, each True when `v` breaks one keyword (or may break it)."""

    def constant(value: Any) -> str:
        name = f"C{len(constants)}"
        constants[name] = value
        return name

    keywords = set(definition) - _ANNOTATIONS
    kind = definition.get("type")
    tests: list[str] = []
    if kind == "string" and keywords <= _STRING_KEYWORDS:
        tests.append("type(v) is not str")
        if "minLength" in definition:
            tests.append(f"len(v) < {constant(definition['minLength'])}")
        if "maxLength" in definition:
            tests.append(f"len(v) > {constant(definition['maxLength'])}")
        if "format" in definition:
            if definition["format"] != "date-time":
                return None
            tests.append("not is_utc_time(v)")
        pattern = definition.get("pattern")
        if pattern is not None and not ("format" in definition and pattern in _IMPLIED_BY_UTC_TIME):
            seen = constant(set())
            tests.append(
                f"v not in {seen} and pattern_broken({seen}, {constant(re.compile(pattern))}, v)"
            )
        if "enum" in definition:
            allowed = frozenset(e for e in definition["enum"] if isinstance(e, str))
            tests.append(f"v not in {constant(allowed)}")
        if "const" in definition:
            tests.append(f"v != {constant(definition['const'])}")
        return tests
    if kind in ("number", "integer") and keywords <= _NUMBER_KEYWORDS:
        # bool is an int subclass and no JSON Schema number: exact type checks.
        if kind == "integer":
            tests.append("type(v) is not int")
        else:
            tests.append("type(v) is not int and type(v) is not float")
        for keyword, op in (("minimum", "<"), ("maximum", ">")):
            bound = definition.get(keyword)
            if bound is not None:
                if isinstance(bound, bool) or not isinstance(bound, int | float):
                    return None
                tests.append(f"v {op} {constant(bound)}")
        if "const" in definition:
            const = definition["const"]
            if isinstance(const, bool) or not isinstance(const, int | float):
                return None
            tests.append(f"v != {constant(const)}")
        return tests
    return None


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


# The common shape of an event time: a strict subset of the schema's date-time format
# once datetime.fromisoformat accepts it (real date, hour <= 23, minute and second <= 59).
_UTC_FORM = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|\+00:00)", re.ASCII)


def _is_utc_time(value: str) -> bool:
    if _UTC_FORM.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


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
    record = _load_object(raw)
    check = _fast_check("transactions")
    if check is None or not check(record):
        validate("transactions", record)
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
    record = _load_object(raw)
    validate(contract, record)
    return record


def _load_object(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        raise ContractError("empty", "message has no value")
    try:
        record = orjson.loads(raw)  # strict RFC 8259: NaN and Infinity do not parse
    except orjson.JSONDecodeError as exc:
        raise ContractError("unparseable", f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ContractError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    return record


def decode_label(raw: bytes | None) -> tuple[dict[str, Any], float]:
    """Bytes from the labels topic -> (label, available_at in epoch seconds)."""
    record = decode_record(raw, "labels")
    return record, parse_time(record["available_at"], "available_at")
