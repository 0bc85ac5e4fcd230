"""Durations ("7d", "90m", "30s") and UTC times for the command line."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float:
    """'7d' -> 604800.0 seconds; a bare number is seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_utc(text: str) -> float:
    """'2018-07-25' or an ISO time (naive means UTC) -> epoch seconds."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def day_of(epoch_s: float) -> int:
    """UTC day number (days since 1970-01-01)."""
    return int(epoch_s // 86400)
