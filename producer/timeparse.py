"""Durations ("90s", "30m", "2h", "7d") and instants ("now", "now-7d", RFC 3339) on the CLI."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_RELATIVE = re.compile(r"^\s*now\s*(?:([+-])\s*(.+))?$")


def parse_duration(text: str) -> float:
    """'2d' -> 172800.0; a bare number is seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_instant(text: str, now: float | None = None) -> float:
    """'now', 'now-7d', '2018-04-01', '2018-04-01 12:00:00' or RFC 3339 -> epoch seconds.
    A time without an offset is UTC."""
    relative = _RELATIVE.match(text)
    if relative:
        base = time.time() if now is None else now
        if relative.group(1) is None:
            return base
        delta = parse_duration(relative.group(2))
        return base - delta if relative.group(1) == "-" else base + delta
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use now, now-7d or 2018-04-01T00:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
