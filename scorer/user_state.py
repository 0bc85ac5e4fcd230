"""Reader for the user states the Lua user scripts left in Redis (formats 1, 2 and 3).

The scorer now keeps user state in its own binary format; states written before the
upgrade are read once, through `decode_legacy`, into the offline `UserState`, whose
features are then the same as the offline builder's. The writers are kept, frozen, in
tests/scorer/format{1,2,3}/user.lua; their header comments describe the layouts.

Lua's cmsgpack shapes what comes back: strings are msgpack str but may hold any bytes
(so everything is unpacked raw and text decoded here), integral numbers are packed as
integers (lat/lon and feature values included), an empty table is an empty array (also
where a map was meant), and Lua stored `false` where Python has None.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import msgpack

from fraudcore.features import USER_NAMES, UserState, _Recent

# Lua struct's "<i4i4dd": day and count int32, then the two sums as doubles.
_DAY_RECORD = struct.Struct("<iidd")
_VECTOR = struct.Struct("<" + "d" * len(USER_NAMES))
_RECENT_FIELDS = 8  # txid, ts, cents, merchant, country, lat, lon, result
# Values after the format number: recent, days, [closed count, sum, sq,] open day, count,
# sum, sq, last ts, lat, lon, devices, countries.
_FORMAT3_VALUES = 15
_FORMAT2_VALUES = 12
_FORMAT1_FIELDS = 5  # {recent, days, last, devices, countries}


def decode_legacy(raw: bytes) -> UserState:
    """The state as written by the format-1, -2 or -3 user script, as a `UserState`.

    Raises ValueError, naming the problem, when `raw` is none of them."""
    if not raw:
        raise ValueError("user state is empty")
    readers = {3: (_format3, _FORMAT3_VALUES), 2: (_format2, _FORMAT2_VALUES), 0x95: (_format1, 1)}
    if raw[0] not in readers:
        raise ValueError(f"user state has an unknown format byte 0x{raw[0]:02x}")
    read, expected = readers[raw[0]]
    name = "1" if raw[0] == 0x95 else str(raw[0])
    try:
        return read(_values(raw, expected))
    except (ValueError, TypeError, struct.error) as exc:
        raise ValueError(f"unreadable user state (format {name}): {exc}") from exc


def _values(raw: bytes, expected: int) -> list[Any]:
    """The concatenated msgpack values of a state (formats 2 and 3 are several, format 1
    is one array); a truncated or padded state is refused rather than half read."""
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
    unpacker.feed(raw)
    values = list(unpacker)
    if len(values) != expected or unpacker.tell() != len(raw):
        raise ValueError(
            f"{len(values)} whole msgpack values in {unpacker.tell()} of {len(raw)} bytes, "
            f"expected {expected} values"
        )
    return values


def _format3(values: list[Any]) -> UserState:
    # The closed_* totals are derived from `days`, so they carry nothing to keep.
    _, recent, days, _, _, _, open_day, count, total, sq = values[:10]
    last_ts, last_lat, last_lon, devices, countries = values[10:]
    return UserState(
        _recent(recent, _packed_vector),
        _days(days, open_day, count, total, sq),
        _last(last_ts, last_lat, last_lon),
        _flat_spans(devices),
        _flat_spans(countries),
    )


def _format2(values: list[Any]) -> UserState:
    _, recent, days, open_day, count, total, sq = values[:7]
    last_ts, last_lat, last_lon, devices, countries = values[7:]
    return UserState(
        _recent(recent, _msgpack_vector),
        _days(days, open_day, count, total, sq),
        _last(last_ts, last_lat, last_lon),
        _flat_spans(devices),
        _flat_spans(countries),
    )


def _format1(values: list[Any]) -> UserState:
    recent, days, last, devices, countries = _fields(values[0], _FORMAT1_FIELDS)
    flat_recent = [value for entry in recent for value in _fields(entry, _RECENT_FIELDS)]
    return UserState(
        _recent(flat_recent, _vector),
        {_int(day): [_int(v) for v in _fields(b, 3)] for day, b in _map(days).items()},
        None if last is False else _last(*_fields(last, 3)),
        {_text(k): [_int(v) for v in _fields(s, 2)] for k, s in _map(devices).items()},
        {_text(k): [_int(v) for v in _fields(s, 2)] for k, s in _map(countries).items()},
    )


def _fields(value: Any, n: int) -> list[Any]:
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"expected an array of {n}, got {value!r:.80}")
    return value


def _map(value: Any) -> dict[Any, Any]:
    # cmsgpack packs an empty Lua table as an empty array, whatever it stood for.
    if value == []:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a map, got {value!r:.80}")
    return value


def _recent(flat: Any, vector: Callable[[Any], list[float]]) -> list[_Recent]:
    if not isinstance(flat, list) or len(flat) % _RECENT_FIELDS:
        raise ValueError(f"recent is {flat!r:.80}, not {_RECENT_FIELDS} values per event")
    return [
        _Recent(
            _text(txid),
            _int(ts),
            _int(cents),
            _text(merchant),
            _text(country),
            _coord(lat),
            _coord(lon),
            vector(result),
        )
        for txid, ts, cents, merchant, country, lat, lon, result in zip(
            *[iter(flat)] * _RECENT_FIELDS, strict=True
        )
    ]


def _days(records: bytes, open_day: Any, count: Any, total: Any, sq: Any) -> dict[int, list[int]]:
    if len(records) % _DAY_RECORD.size:
        raise ValueError(f"days is {len(records)} bytes, not whole {_DAY_RECORD.size}-byte records")
    days = {day: [c, _int(s), _int(q)] for day, c, s, q in _DAY_RECORD.iter_unpack(records)}
    if open_day is not False:
        days[_int(open_day)] = [_int(count), _int(total), _int(sq)]
    return days


def _last(ts: Any, lat: Any, lon: Any) -> tuple[int, float | None, float | None] | None:
    return None if ts is False else (_int(ts), _coord(lat), _coord(lon))


def _flat_spans(flat: Any) -> dict[str, list[int]]:
    if not isinstance(flat, list) or len(flat) % 3:
        raise ValueError(f"{flat!r:.80} is not (key, first ts, last ts) triples")
    return {
        _text(key): [_int(first), _int(last)]
        for key, first, last in zip(*[iter(flat)] * 3, strict=True)
    }


def _packed_vector(result: bytes) -> list[float]:
    return _vector(list(_VECTOR.unpack(result)))


def _msgpack_vector(result: bytes) -> list[float]:
    return _vector(msgpack.unpackb(result))


def _vector(values: list[Any]) -> list[float]:
    if not isinstance(values, list) or len(values) != len(USER_NAMES):
        raise ValueError(f"feature vector {values!r:.80} is not {len(USER_NAMES)} values")
    # Lua's 0/0 is the negative quiet NaN and Python's the positive one; NaN only means
    # "missing", so replays give the offline builder's NaN, bit for bit.
    return [math.nan if math.isnan(v) else float(v) for v in values]


def _int(value: Any) -> int:
    """Lua numbers are doubles: counts, times and cents sums come back as integers or as
    integral doubles (sums of cents^2 past 2^63, or stored in day records)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r:.80}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integral number, got {value!r}")
    return int(value)


def _coord(value: Any) -> float | None:
    if value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a coordinate or false, got {value!r:.80}")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, bytes):
        raise ValueError(f"expected a string, got {value!r:.80}")
    return value.decode()
