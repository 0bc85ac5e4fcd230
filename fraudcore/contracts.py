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
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal, NamedTuple

import fastjsonschema
import msgspec
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

    Types, lengths, bounds and enums go to a msgspec Struct generated from the schema
    (msgspec.convert checks a dict against it in C); patterns and formats, where msgspec's
    rules differ from JSON Schema's, stay straight-line Python. No error reporting, which
    is what makes it cheap."""
    outer = set(schema) - _ANNOTATIONS
    if schema.get("type") != "object" or not outer <= _OBJECT_KEYWORDS:
        return None
    if not isinstance(schema.get("additionalProperties", True), bool):
        return None
    required = frozenset(schema.get("required", ()))
    properties: dict[str, Any] = schema.get("properties", {})
    if not required <= properties.keys():
        return None  # a required field with no definition: leave it to the full path
    constants: dict[str, Any] = {
        "MISSING": object(),
        "convert": msgspec.convert,
        "utc_epoch": _utc_epoch,
        "pattern_broken": _pattern_broken,
    }
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    lines: list[str] = []
    for i, (name, definition) in enumerate(properties.items()):
        shape = _field_shape(definition)
        tests = _python_tests(definition, constants)
        if shape is None or tests is None:
            return None
        # Attribute names need not be identifiers; the JSON names travel in `rename`.
        rename[f"f{i}"] = name
        # Absent optional fields get None, which no JSON null can pass as (no type here
        # admits null), so it never hides a bad value.
        fields.append((f"f{i}", shape) if name in required else (f"f{i}", shape, None))
        if not tests:
            continue
        if name in required:
            indent = "    "
            lines.append(f"    v = r[{name!r}]")
        else:
            indent = "        "
            lines += [f"    v = r.get({name!r}, MISSING)", "    if v is not MISSING:"]
        lines += [f"{indent}if {test}:\n{indent}    return False" for test in tests]
    constants["SHAPE"] = msgspec.defstruct(
        "Shape",
        fields,
        rename=rename,
        forbid_unknown_fields=schema.get("additionalProperties", True) is False,
        gc=False,
    )
    head = [
        "def check(r):",
        "    try:",
        "        convert(r, SHAPE)",
        # Whatever msgspec does not like is "not sure"; the full path writes the error.
        "    except Exception:",
        "        return False",
    ]
    source = "\n".join([*head, *lines, "    return True"])
    exec(source, constants)  # our own schema; values travel as named constants
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
# msgspec compares a number with a bound as a float: exact for every bound below 2**53
# (an integer past it converts to a float past the bound, on the same side).
_EXACT_BOUND = 2.0**53


def _field_shape(definition: dict[str, Any]) -> Any:
    """The msgspec type accepting a subset of what `definition` accepts (the subset is
    the whole of it, apart from what `_python_tests` checks); None if it has none."""
    keywords = set(definition) - _ANNOTATIONS
    kind = definition.get("type")
    if kind == "string" and keywords <= _STRING_KEYWORDS:
        low, high = definition.get("minLength", 0), definition.get("maxLength")
        if type(low) is not int or low < 0 or not (high is None or type(high) is int):
            return None
        if "enum" in definition and "const" in definition:
            return None
        if "enum" in definition or "const" in definition:
            # Listed values only, those within the length bounds (code points, as both
            # JSON Schema and msgspec count).
            listed = definition["enum"] if "enum" in definition else [definition["const"]]
            allowed = tuple(
                dict.fromkeys(
                    e
                    for e in listed
                    if isinstance(e, str) and low <= len(e) and (high is None or len(e) <= high)
                )
            )
            return Literal[allowed] if allowed else None
        return Annotated[str, msgspec.Meta(min_length=low, max_length=high)]
    if kind in ("number", "integer") and keywords <= _NUMBER_KEYWORDS:
        bounds: dict[str, int | float] = {}
        for keyword, meta in (("minimum", "ge"), ("maximum", "le")):
            bound = definition.get(keyword)
            if bound is None:
                continue
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                return None
            if not -_EXACT_BOUND < bound < _EXACT_BOUND:
                return None
            if kind == "integer" and not isinstance(bound, int):
                return None
            bounds[meta] = bound
        if "const" in definition:
            # msgspec's Literal takes exactly int 1 for 1 (not 1.0, not true): only an
            # integer const of an integer field maps onto it.
            const = definition["const"]
            if kind != "integer" or type(const) is not int:
                return None
            if not bounds.get("ge", const) <= const <= bounds.get("le", const):
                return None
            return Literal[const]
        # msgspec's int takes no bool and no 1.0, its float takes int and float but no bool.
        number: Any = int if kind == "integer" else float
        return Annotated[number, msgspec.Meta(ge=bounds.get("ge"), le=bounds.get("le"))]
    return None


def _python_tests(definition: dict[str, Any], constants: dict[str, Any]) -> list[str] | None:
    """Python conditions for what the msgspec shape leaves out, each True when `v` breaks
    one keyword (or may break it). Runs only once the shape has accepted `v`."""

    def constant(value: Any) -> str:
        name = f"C{len(constants)}"
        constants[name] = value
        return name

    tests: list[str] = []
    if "format" in definition:
        if definition["format"] != "date-time":
            return None
        tests.append("utc_epoch(v) is None")
    pattern = definition.get("pattern")
    if pattern is not None and not ("format" in definition and pattern in _IMPLIED_BY_UTC_TIME):
        seen = constant(set())
        tests.append(
            f"v not in {seen} and pattern_broken({seen}, {constant(re.compile(pattern))}, v)"
        )
    return tests


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
    if type(value) is str:
        epoch = _utc_epoch(value)
        if epoch is not None:
            return epoch
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


# The last time looked at, and its epoch: every accepted transaction's time is looked at
# twice in a row, by the fast check and then by parse_time, as the same str object.
# Replaced as one tuple, so threads never see a value with another's epoch.
_last_time: tuple[str, float | None] = ("", None)


def _utc_epoch(value: str) -> float | None:
    """Epoch seconds of a time in the common shape that fromisoformat accepts (exactly
    parse_time's result for it); None for anything else."""
    global _last_time
    last = _last_time
    if last[0] is value:
        return last[1]
    epoch: float | None
    try:
        epoch = datetime.fromisoformat(value).timestamp() if _UTC_FORM.fullmatch(value) else None
    except ValueError:  # a shape that is no real time (2026-02-30, 24:00)
        epoch = None
    _last_time = (value, epoch)
    return epoch


def _is_utc_time(value: str) -> bool:
    return _utc_epoch(value) is not None


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
    clock = time.time() if now is None else now
    return transaction_decoder(max_bytes=max_bytes, max_future_s=max_future_s, now=clock)(raw)


def transaction_decoder(
    *, max_bytes: int, max_future_s: float, now: float
) -> Callable[[bytes | None], tuple[dict[str, Any], float]]:
    """decode_transaction with its limits and clock fixed, for a batch of messages: the
    per-message work is only what depends on the message."""
    check = _fast_check("transactions")
    latest = now + max_future_s

    def decode(raw: bytes | None) -> tuple[dict[str, Any], float]:
        if raw and len(raw) > max_bytes:
            raise ContractError("oversized", f"{len(raw)} bytes is over the {max_bytes}-byte limit")
        record = _load_object(raw)
        if check is None or not check(record):
            validate("transactions", record)
        amount = record["amount"]
        if isinstance(amount, bool) or not math.isfinite(amount):
            raise ContractError("bad_amount", f"must be a finite number, got {amount!r}", "amount")
        event_ts = parse_time(record["timestamp"])
        if not EARLIEST_EVENT_TIME <= event_ts <= latest:
            raise ContractError(
                "bad_timestamp",
                f"{record['timestamp']} is outside the plausible range "
                f"[2000-01-01, now + {max_future_s:.0f}s]",
                "timestamp",
            )
        return record, event_ts

    return decode


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
        raise unparseable(raw, exc) from None
    if not isinstance(record, dict):
        raise ContractError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    return record


class NonFinite(NamedTuple):
    """A number in a JSON text that no double holds: where it is and how it was written."""

    path: tuple[str | int, ...]  # keys and array indexes from the top; () for the top itself
    text: str  # NaN, Infinity, -Infinity, 1e400, ...

    @property
    def field(self) -> str | None:
        return ".".join(str(p) for p in self.path) or None


class _Unrepresentable:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _number(text: str) -> _Unrepresentable | None:
    # Finite numbers are of no interest here, so they are not built (None).
    return None if math.isfinite(float(text)) else _Unrepresentable(text)


def non_finite_number(raw: bytes) -> NonFinite | None:
    """The first number, in document order, that orjson refuses because no double holds it
    (NaN, Infinity, -Infinity, or a magnitude past ~1.8e308 such as 1e400); None when
    there is none or the text is broken in another way.

    Only for bytes orjson already refused: it parses again with Python's json module,
    whose hooks see each number as written, so it is slow and stays off the hot path."""
    try:
        text = raw.decode("utf-8")  # orjson reads UTF-8 only; json.loads(bytes) guesses
        document = json.loads(
            text,
            object_pairs_hook=tuple,
            parse_constant=_Unrepresentable,
            parse_float=_number,
            parse_int=_number,
        )
    except (ValueError, RecursionError):
        return None
    # Depth first, children in document order; objects stay (key, value) pairs (tuples:
    # arrays are lists) so that a key given twice is looked at both times.
    pending: list[tuple[tuple[str | int, ...], Any]] = [((), document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, _Unrepresentable):
            return NonFinite(path, value.text)
        children: Iterable[tuple[str | int, Any]]
        if isinstance(value, tuple):
            children = value
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        pending.extend(reversed([((*path, key), child) for key, child in children]))
    return None


def unparseable(raw: bytes, exc: Exception) -> ContractError:
    """The ContractError for bytes orjson refused; it names the field when the cause is
    a number no double holds, since orjson's message has only a column."""
    return unparseable_as_found(non_finite_number(raw), exc)


def unparseable_as_found(found: NonFinite | None, exc: Exception) -> ContractError:
    """unparseable() for a caller that has non_finite_number's answer already."""
    if found is None:
        return ContractError("unparseable", f"not valid JSON: {exc}")
    shown = (
        found.text if len(found.text) <= 40 else f"{found.text[:24]}... ({len(found.text)} chars)"
    )
    return ContractError(
        "unparseable",
        f"not valid JSON: {shown} is not a finite number "
        "(JSON has no NaN or Infinity, and a 64-bit float ends near 1.8e308)",
        found.field,
    )


def decode_label(raw: bytes | None) -> tuple[dict[str, Any], float]:
    """Bytes from the labels topic -> (label, available_at in epoch seconds)."""
    record = decode_record(raw, "labels")
    return record, parse_time(record["available_at"], "available_at")
