"""The fast transaction check against the full JSON Schema path, message by message.

decode_transaction skips fastjsonschema when a check generated from the same schema proves
the message valid. These tests feed thousands of seeded messages, valid and broken in
every way we could think of, through decode_transaction and through `full_path` (the
decode as it was before the fast check, kept here as the reference) and require the same
record and event time, or the same ContractError (reason, field, detail).
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import fastjsonschema
import pytest

from fraudcore import contracts
from fraudcore.contracts import (
    DEFAULT_MAX_FUTURE_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    EARLIEST_EVENT_TIME,
    ContractError,
    build_fast_check,
    decode_record,
    decode_transaction,
    load_schema,
    parse_time,
)

NOW = 1_795_000_000.0  # 2026-11-18, fixed so the plausible-time range is deterministic
SCHEMA = load_schema("transactions")
OPTIONAL = sorted(set(SCHEMA["properties"]) - set(SCHEMA["required"]))


def full_path(raw: bytes | None, now: float = NOW) -> tuple[dict[str, Any], float]:
    """decode_transaction before the fast check: every message through fastjsonschema."""
    if raw and len(raw) > DEFAULT_MAX_MESSAGE_BYTES:
        raise ContractError(
            "oversized", f"{len(raw)} bytes is over the {DEFAULT_MAX_MESSAGE_BYTES}-byte limit"
        )
    record = decode_record(raw, "transactions")
    amount = record["amount"]
    if isinstance(amount, bool) or not math.isfinite(amount):
        raise ContractError("bad_amount", f"must be a finite number, got {amount!r}", "amount")
    event_ts = parse_time(record["timestamp"])
    if not EARLIEST_EVENT_TIME <= event_ts <= now + DEFAULT_MAX_FUTURE_S:
        raise ContractError(
            "bad_timestamp",
            f"{record['timestamp']} is outside the plausible range "
            f"[2000-01-01, now + {DEFAULT_MAX_FUTURE_S:.0f}s]",
            "timestamp",
        )
    return record, event_ts


def outcome(decode: Callable[[bytes | None], tuple[dict[str, Any], float]], raw: Any) -> Any:
    try:
        record, event_ts = decode(raw)
    except ContractError as error:
        return ("error", error.reason, error.field, error.detail)
    # repr() tells 0.1 from 0.1000000001 and -0.0 from 0.0, and 1 from 1.0.
    return ("ok", repr(record), repr(event_ts))


# Values that sit on or next to every edge the schema draws, and things that are no value
# of the right kind at all.
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 0.5, -0.0, 1e308, -1e308, 10**30, -(10**30), 2**63,
    "", "x", "1", [], [1], {}, {"a": 1},
]  # fmt: skip
TIMES = [
    "2026-11-01T08:42:17Z", "2026-11-01T08:42:17.1Z", "2026-11-01T08:42:17.123Z",
    "2026-11-01T08:42:17.123456Z", "2026-11-01T08:42:17.1234567Z",
    "2026-11-01T08:42:17.999999999+00:00", "2026-11-01T08:42:17+00:00",
    "2026-11-01T08:42:17.Z", "2026-11-01t08:42:17Z", "2026-11-01T08:42:17z",
    "2026-11-01 08:42:17Z", "2026-11-01T08:42Z", "20261101T084217Z", "2026-11-01T08:42:17",
    "2026-11-01T08:42:17-00:00", "2026-11-01T08:42:17+01:00", "2026-11-01T08:42:17+0000",
    "2026-11-01T08:42:17,5Z", "2026-11-01T08:42:60Z", "2026-11-01T08:60:00Z",
    "2026-11-01T24:00:00Z", "2026-11-31T00:00:00Z", "2026-13-01T00:00:00Z",
    "2026-00-01T00:00:00Z", "2026-11-00T00:00:00Z", "2024-02-29T00:00:00Z",
    "2026-02-29T00:00:00Z", "2000-02-29T12:00:00Z", "1900-02-29T00:00:00Z",
    "2000-01-01T00:00:00Z", "1999-12-31T23:59:59.999999Z", "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "2026-11-19T00:00:00Z", "2026-11-20T00:00:00Z",
    "2026-11-01T08:42:17Z\n", "\n2026-11-01T08:42:17Z", " 2026-11-01T08:42:17Z",
    "2026-11-01T08:42:17ZZ", "２０２６-11-01T08:42:17Z", "2026-11-01T08:42:1٧Z", "Z", "",
]  # fmt: skip
STRINGS = [
    "a", "ü", "日本", "😀" * 64, "😀" * 65, "x" * 63, "x" * 64, "x" * 65, "x" * 127,
    "x" * 128, "x" * 129, "EUR", "eur", "EURO", "EU", "US", "us", "U", "USA", "ÉU", "EUR\n",
    "US\n", "pos", "online", "atm", "contactless", "POS", "pos\n", " pos", "a\"b\\c",
    "\u0000", "\n",
]  # fmt: skip
NUMBERS = [
    0, 0.0, -0.0, 1e-9, -1e-9, 0.01, 89.99999, 90, 90.0, 90.0000001, -90, -90.5, 180, 180.5,
    -180, -181, 999_999.99, 1_000_000, 1_000_000.0, 1_000_000.01, 10**7, 10**30, 1e308,
]  # fmt: skip


def valid_record(rng: random.Random, i: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": 1,
        "transaction_id": rng.choice([f"t{i}", f"tx-ü-{i}", "x" * 128, "7"]),
        "user_id": rng.choice([f"c{i % 97}", "日本", 'a"b\\c', "x" * 128, "u"]),
        "merchant_id": rng.choice([f"m{i % 13}", "t", "😀" * 128]),
        "amount": rng.choice(
            [0, 0.0, 1_000_000, 1_000_000.0, 12.34, round(rng.uniform(0, 5000), 2), 7]
        ),
        "timestamp": rng.choice(
            [
                "2026-11-01T08:42:17.123Z",
                "2026-11-17T23:59:59Z",
                "2000-01-01T00:00:00Z",
                "2026-11-18T10:00:00.5+00:00",
                "2024-02-29T13:14:15.123456789Z",
            ]
        ),
    }
    optional = {
        "currency": rng.choice(["EUR", "USD", "GBP"]),
        "merchant_category": rng.choice(["grocery", "x" * 64, "ü"]),
        "channel": rng.choice(SCHEMA["properties"]["channel"]["enum"]),
        "country": rng.choice(["FR", "US", "PT"]),
        "lat": rng.choice([-90, 90, 0, round(rng.uniform(-90, 90), 4), -0.0]),
        "lon": rng.choice([-180, 180, 0, round(rng.uniform(-180, 180), 4)]),
        "device_id": rng.choice(["dev-1", "x" * 128, "d"]),
    }
    for name in OPTIONAL:
        if rng.random() < 0.7:
            record[name] = optional[name]
    if rng.random() < 0.2:
        record[rng.choice(["extra", "note", "fraud", "ü"])] = rng.choice(ODD_VALUES)
    items = list(record.items())
    rng.shuffle(items)  # key order must not matter
    return dict(items)


def mutated(rng: random.Random, base: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every field removed, and set to odd values, wrong types and edge values."""
    for name in SCHEMA["properties"]:
        gone = dict(base)
        gone.pop(name, None)
        yield gone
        for value in rng.sample(ODD_VALUES, 6) + rng.sample(STRINGS, 6) + rng.sample(NUMBERS, 6):
            yield {**base, name: value}
    for stamp in TIMES:
        yield {**base, "timestamp": stamp}


def encode(record: dict[str, Any]) -> bytes:
    # The standard library, not orjson: it also writes integers beyond 64 bits.
    return json.dumps(record, ensure_ascii=False).encode()


def messages(seed: int) -> Iterator[bytes | None]:
    rng = random.Random(seed)
    for i in range(1200):
        record = valid_record(rng, i)
        yield encode(record)
        if i % 25 == 0:
            for broken in mutated(rng, record):
                yield encode(broken)
    # Not a transaction-shaped object at all.
    yield from [None, b"", b"{", b"[]", b"1", b'"x"', b"null", b"NaN", b'{"amount": NaN}']
    yield b'{"schema_version": 1}'
    big = valid_record(rng, 0)
    big["pad"] = "x" * DEFAULT_MAX_MESSAGE_BYTES
    yield encode(big)
    yield encode(valid_record(rng, 1)).replace(b"}", b', "dup": 1, "dup": 2}', 1)
    yield encode(valid_record(rng, 2))[:-1]


def test_fast_check_is_on_for_transactions() -> None:
    # Otherwise every other test here would compare the full path with itself.
    assert contracts._fast_check("transactions") is not None


def test_decode_transaction_matches_the_full_schema_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    validations = 0
    validate = contracts.validate

    def counting(contract: str, record: Any) -> None:
        nonlocal validations
        validations += 1
        validate(contract, record)

    monkeypatch.setattr(contracts, "validate", counting)
    compared = accepted = full_on_fast_side = 0
    for raw in messages(seed=20261121):
        expected = outcome(full_path, raw)
        before = validations
        got = outcome(lambda r: decode_transaction(r, now=NOW), raw)
        full_on_fast_side += validations - before
        assert got == expected, raw
        compared += 1
        accepted += expected[0] == "ok"
    assert compared > 5000
    # Both outcomes occur in bulk, and most valid messages never reached fastjsonschema.
    assert 1000 < accepted < compared - 1000
    assert full_on_fast_side < compared - accepted + accepted // 10


@pytest.mark.parametrize("closed", [False, True])
def test_generated_check_never_accepts_what_the_schema_rejects(closed: bool) -> None:
    # Also the closed variant (additionalProperties: false) of the same schema, straight
    # against fastjsonschema on parsed objects.
    schema = copy.deepcopy(SCHEMA)
    schema["additionalProperties"] = not closed
    check = build_fast_check(schema)
    assert check is not None
    validator = fastjsonschema.compile(schema)
    rng = random.Random(7)
    fast_yes = 0
    for i in range(400):
        base = valid_record(rng, i)
        if closed:
            base = {k: v for k, v in base.items() if k in SCHEMA["properties"]}
        for record in [base, *mutated(rng, base), {**base, "extra": 1}]:
            if check(record):
                fast_yes += 1
                validator(record)  # raises if the fast check was wrong
    assert fast_yes > 400


@pytest.mark.parametrize(
    "change",
    [
        {"additionalProperties": {"type": "string"}},
        {"patternProperties": {"^x": {"type": "string"}}},
        {"properties": {"amount": {"type": "number", "exclusiveMinimum": 0}}},
        {"properties": {"amount": {"type": ["number", "null"]}}},
        {"properties": {"currency": {"type": "string", "format": "email"}}},
        {"properties": {"meta": {"type": "object"}}},
        {"type": ["object", "null"]},
    ],
)
def test_schema_features_it_does_not_mirror_turn_it_off(change: dict[str, Any]) -> None:
    schema = copy.deepcopy(SCHEMA)
    for key, value in change.items():
        if key == "properties":
            schema["properties"].update(value)
        else:
            schema[key] = value
    assert build_fast_check(schema) is None


def test_patterns_taken_as_implied_by_a_utc_time_are() -> None:
    rng = random.Random(3)
    stamps = TIMES + [
        f"{rng.randint(1, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        f"{rng.choice(['', '.5', '.123456789'])}{rng.choice(['Z', '+00:00'])}"
        for _ in range(500)
    ]
    utc = [s for s in stamps if contracts._is_utc_time(s)]
    assert len(utc) > 500
    for pattern in contracts._IMPLIED_BY_UTC_TIME:
        validator = fastjsonschema.compile({"type": "string", "pattern": pattern})
        for stamp in utc:
            validator(stamp)


# Each keyword the generated msgspec Shape mirrors, alone and combined, with the values
# that sit on its edges (and past 2**53, where floats stop counting every integer).
MAPPED_DEFINITIONS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "minLength": 2, "maxLength": 3},
    {"type": "string", "enum": ["a", "bb", "ccc", 1, None, "bb"], "maxLength": 2},
    {"type": "string", "enum": ["pos", "atm"], "minLength": 1},
    {"type": "string", "const": "x"},
    {"type": "string", "pattern": "^[a-z]{2}$", "maxLength": 2},
    {"type": "string", "format": "date-time", "pattern": "(Z|\\+00:00)$"},
    {"type": "integer"},
    {"type": "integer", "minimum": -3, "maximum": 5},
    {"type": "integer", "const": 1, "minimum": 0},
    {"type": "number"},
    {"type": "number", "minimum": -0.5, "maximum": 2**52},
    {"type": "number", "minimum": 0, "maximum": 1_000_000},
]
EDGE_NUMBERS: list[Any] = [
    -4, -3, -3.0, -0.5, -0.50001, 5, 5.0, 6, 1.0, 2**52, 2**52 + 1, 2.0**52, 2**53, 2**53 + 1,
    -(2**53) - 1, 2**64, 1e300,
]  # fmt: skip


@pytest.mark.parametrize("definition", MAPPED_DEFINITIONS)
@pytest.mark.parametrize("required", [True, False])
def test_each_keyword_given_to_msgspec_accepts_nothing_the_schema_rejects(
    definition: dict[str, Any], required: bool
) -> None:
    schema = {"type": "object", "properties": {"x": definition, "y": {"type": "integer"}}}
    if required:
        schema["required"] = ["x"]
    check = build_fast_check(schema)
    assert check is not None, definition
    validator = fastjsonschema.compile(schema)
    fast_yes = schema_yes = 0
    for value in [*ODD_VALUES, *STRINGS, *NUMBERS, *EDGE_NUMBERS, *TIMES, "bb", "ccc", "ab"]:
        for record in ({"x": value}, {"x": value, "y": 1}, {"x": value, "y": True}, {"y": 2}):
            try:
                validator(record)
                schema_yes += 1
            except fastjsonschema.JsonSchemaValueException:
                assert not check(record), (definition, record)
                continue
            fast_yes += check(record)
    # Not vacuous: the fast check says yes too (not always: 1.0 is a JSON Schema integer,
    # msgspec's int takes no float, so it is "not sure" there).
    assert fast_yes > 0, (fast_yes, schema_yes)


@pytest.mark.parametrize(
    "definition",
    [
        {"type": "number", "const": 1},  # 1 and 1.0 are one JSON Schema number
        {"type": "integer", "minimum": 0.5},
        {"type": "integer", "const": 1.0},
        {"type": "integer", "const": 7, "maximum": 5},
        {"type": "number", "maximum": 2**53},  # floats past 2**53 skip integers
        {"type": "number", "minimum": True},
        {"type": "string", "enum": ["a"], "const": "a"},
        {"type": "string", "enum": ["toolong"], "maxLength": 3},
        {"type": "string", "enum": [1, 2]},
        {"type": "string", "maxLength": 2.5},
        {"type": "string", "minLength": -1},
    ],
)
def test_keywords_msgspec_cannot_mirror_exactly_turn_it_off(definition: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {"x": definition}}
    assert build_fast_check(schema) is None


def test_required_field_without_a_definition_turns_it_off() -> None:
    assert build_fast_check({**SCHEMA, "required": [*SCHEMA["required"], "nope"]}) is None


def test_fast_time_is_parse_times_result_to_the_bit() -> None:
    # The cached last look and the uncached one, for times valid and not, given as
    # the same str object twice (the fast check, then parse_time) and as fresh copies.
    rng = random.Random(11)
    stamps = TIMES + [
        f"{rng.randint(1, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d}T"
        f"{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}:{rng.randint(0, 60):02d}"
        f"{rng.choice(['', '.', '.5', '.123', '.123456', '.1234567891'])}"
        f"{rng.choice(['Z', '+00:00', 'z', '+01:00', ''])}"
        for _ in range(3000)
    ]
    fast = 0
    for stamp in stamps:
        copy_of = "".join(stamp)  # an equal string, another object
        for value in (stamp, stamp, copy_of):
            epoch = contracts._utc_epoch(value)
            if epoch is None:
                continue
            fast += 1
            assert repr(epoch) == repr(parse_time(value))
            assert repr(epoch) == repr(contracts.datetime.fromisoformat(value).timestamp())
        try:
            expected = repr(parse_time(copy_of))
        except ContractError:
            assert contracts._utc_epoch(stamp) is None, stamp
            continue
        assert repr(parse_time(stamp)) == expected
    assert fast > 1000
