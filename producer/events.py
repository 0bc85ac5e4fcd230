"""What a source (the simulator or a file replay) hands to the Kafka loop."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fraudcore.contracts import SCHEMA_VERSION, format_time

LEGIT = "legit"  # the scenario (metric label) of a legit transaction
FRAUD = "fraud"  # the scenario of a fraudulent transaction whose scenario is not known


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a replayed record comes from, for the DLQ."""

    source_file: str
    line: int
    raw: bytes | None = None  # the line as read (JSONL)
    values: Sequence[str] = ()  # the parsed fields (CSV)

    def row(self) -> bytes:
        """The record as read: the JSONL line, or the CSV fields as one CSV line (built
        only for the DLQ, not for every row)."""
        if self.raw is not None:
            return self.raw
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(self.values)
        return out.getvalue().encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class Event:
    """A transaction, and the label that may only be published from `available_at` on."""

    tx: dict[str, Any]
    event_ts: float
    label: dict[str, Any] | None  # None: a replayed file without labels
    available_at: float
    scenario: str  # metric label: LEGIT, the fraud scenario, or FRAUD when none is known
    origin: Origin | None = None  # None: simulated


@dataclass(slots=True)
class Rejected:
    """A replayed row that cannot become a valid transaction: it goes to the DLQ."""

    reason: str
    field: str | None
    detail: str
    origin: Origin
    key: bytes | None = None


def make_label(
    tx: dict[str, Any],
    *,
    fraud: bool,
    scenario: str | None,
    source: str,
    available_at: float,
) -> dict[str, Any]:
    label: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "transaction_id": tx["transaction_id"],
        "user_id": tx["user_id"],
        "merchant_id": tx["merchant_id"],
        "label": "fraud" if fraud else "legit",
        "source": source,
        "available_at": format_time(available_at),
        "transaction_time": tx["timestamp"],
    }
    if fraud and scenario:
        label["scenario"] = scenario
    return label


def make_event(
    tx: dict[str, Any],
    event_ts: float,
    *,
    fraud: bool,
    scenario: str | None,
    source: str,
    delay_s: float,
    origin: Origin | None = None,
) -> Event:
    available_at = event_ts + delay_s
    label = make_label(tx, fraud=fraud, scenario=scenario, source=source, available_at=available_at)
    metric_scenario = (scenario or FRAUD) if fraud else LEGIT
    return Event(tx, event_ts, label, available_at, metric_scenario, origin)
