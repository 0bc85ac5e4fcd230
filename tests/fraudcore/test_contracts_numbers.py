"""Numbers no double holds (NaN, Infinity, 1e400): orjson refuses the whole message with a
column only; the ContractError names the field that holds the number."""

from __future__ import annotations

import pytest

from fraudcore.contracts import (
    ContractError,
    decode_record,
    decode_transaction,
    non_finite_number,
)

NOW = 1_795_000_000.0  # 2026-11-18
UNREPRESENTABLE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400]


def _transaction(amount: str = "12.5", lat: str = "48.85") -> bytes:
    return (
        '{"schema_version":1,"transaction_id":"tx-1","user_id":"u-1","merchant_id":"m-1",'
        f'"amount":{amount},"timestamp":"2026-11-17T08:00:00Z","lat":{lat},"lon":2.35}}'
    ).encode()


def _error(raw: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        decode_transaction(raw, now=NOW)
    return caught.value


def test_a_valid_transaction_with_finite_numbers_decodes() -> None:
    record, _ = decode_transaction(_transaction(), now=NOW)
    assert (record["amount"], record["lat"]) == (12.5, 48.85)


@pytest.mark.parametrize("number", UNREPRESENTABLE)
def test_an_unrepresentable_amount_is_named(number: str) -> None:
    error = _error(_transaction(amount=number))
    assert (error.reason, error.field) == ("unparseable", "amount")
    assert number[:24] in error.detail and "not a finite number" in error.detail
    assert str(error).startswith("amount: ")


@pytest.mark.parametrize("number", UNREPRESENTABLE)
def test_an_unrepresentable_lat_is_named(number: str) -> None:
    error = _error(_transaction(lat=number))
    assert (error.reason, error.field) == ("unparseable", "lat")


def test_the_first_such_number_in_the_text_is_the_one_named() -> None:
    assert _error(_transaction(amount="NaN", lat="NaN")).field == "amount"
    # A key given twice: the first value is where the text breaks, even if a later one
    # would have replaced it.
    raw = b'{"lat": NaN, "lat": 1, "amount": Infinity}'
    assert _error(raw).field == "lat"


def test_nested_fields_are_named_by_their_path() -> None:
    raw = b'{"transaction": {"amount": 1}, "reasons": [{"value": 1}, {"value": -Infinity}]}'
    found = non_finite_number(raw)
    assert found is not None
    assert (found.path, found.text, found.field) == (
        ("reasons", 1, "value"),
        "-Infinity",
        "reasons.1.value",
    )
    with pytest.raises(ContractError) as caught:
        decode_record(raw, "alerts")
    assert (caught.value.reason, caught.value.field) == ("unparseable", "reasons.1.value")


def test_a_bare_number_has_no_field() -> None:
    found = non_finite_number(b"NaN")
    assert found is not None and found.path == () and found.field is None
    with pytest.raises(ContractError) as caught:
        decode_record(b"NaN", "labels")
    assert (caught.value.reason, caught.value.field) == ("unparseable", None)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"amount": 12.5',  # truncated: broken, and no odd number in it
        b'{"amount": NaN',  # truncated, and a NaN: still broken in another way
        b'\xff{"amount": NaN}',  # not UTF-8, which orjson refuses first
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's json goes
    ],
)
def test_text_broken_otherwise_stays_unparseable_without_a_field(raw: bytes) -> None:
    assert non_finite_number(raw) is None
    with pytest.raises(ContractError) as caught:
        decode_record(raw, "transactions")
    assert (caught.value.reason, caught.value.field) == ("unparseable", None)
    assert caught.value.detail.startswith("not valid JSON: ")


def test_a_very_long_number_is_shortened_in_the_detail() -> None:
    error = _error(_transaction(amount="9" * 5000))
    assert error.field == "amount"
    assert "(5000 chars)" in error.detail and len(error.detail) < 200
