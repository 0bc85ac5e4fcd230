"""Training data from files: CSV or JSON Lines, optionally gzip-compressed, read streamed.

A generic file holds transactions with the contract's field names (transactions.v1.json)
and optionally a `label` column (fraud/legit, or 1/0), `label_available_at` (RFC 3339;
default: the transaction time plus the label delay) and `scenario`. The `handbook` preset
reads the Fraud Detection Handbook's simulated data (see HANDBOOK_COLUMNS).

Every transaction goes through fraudcore.contracts.decode_transaction, so a file is held
to the same contract as the topic; a bad row is counted by reason and skipped.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import orjson

from fraudcore.contracts import ContractError, decode_transaction, parse_time
from fraudcore.logs import kv
from trainer.labels import Label

logger = logging.getLogger(__name__)

Preset = Literal["auto", "generic", "handbook"]
HANDBOOK_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")
HANDBOOK_SCENARIOS = {"1": "high_amount", "2": "compromised_terminal", "3": "compromised_card"}
_TRUE = {"fraud", "1", "true", "yes"}
_FALSE = {"legit", "0", "false", "no", ""}
_NUMERIC = ("amount", "lat", "lon")


class Transaction(NamedTuple):
    record: dict[str, Any]
    event_ts: float


Event = Transaction | Label


@dataclass
class FileStats:
    rows: int = 0
    transactions: int = 0
    labels: int = 0
    out_of_range: int = 0
    invalid: Counter[str] | None = None

    def __post_init__(self) -> None:
        if self.invalid is None:
            self.invalid = Counter()


class _Progress:
    """Position in the underlying (compressed) file, for a progress bar."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw

    def tell(self) -> int:
        return self.raw.tell()


def open_text(path: Path) -> tuple[IO[str], _Progress]:
    raw = path.open("rb")
    stream: Any = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
    return io.TextIOWrapper(stream, encoding="utf-8", newline=""), _Progress(raw)


def file_format(path: Path) -> Literal["csv", "jsonl"]:
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(f"{path}: unknown format (expected .csv, .jsonl or .ndjson, optionally .gz)")


def _handbook_row(row: dict[str, str]) -> tuple[dict[str, Any], str | None, str | None]:
    """Handbook columns -> (transaction record, label, scenario)."""
    stamp = row["TX_DATETIME"].replace(" ", "T") + "Z"
    record = {
        "schema_version": 1,
        "transaction_id": row["TRANSACTION_ID"],
        "user_id": row["CUSTOMER_ID"],
        "merchant_id": row["TERMINAL_ID"],
        "amount": float(row["TX_AMOUNT"]),
        "timestamp": stamp,
    }
    label = "fraud" if row.get("TX_FRAUD", "0").strip() == "1" else "legit"
    scenario = HANDBOOK_SCENARIOS.get(row.get("TX_FRAUD_SCENARIO", "").strip())
    return record, label, scenario


def _generic_row(row: dict[str, Any], from_csv: bool) -> tuple[dict[str, Any], str | None, Any]:
    """A generic row -> (transaction record, label or None, scenario)."""
    record = {k: v for k, v in row.items() if v not in (None, "")}
    label_value = record.pop("label", None)
    scenario = record.pop("scenario", None)
    if from_csv:
        for key in _NUMERIC:
            if key in record:
                try:
                    record[key] = float(record[key])
                except ValueError:
                    raise ContractError(
                        "schema_violation", f"must be a number, got {record[key]!r}", key
                    ) from None
        record["schema_version"] = int(record.get("schema_version", 1))
    record.setdefault("schema_version", 1)
    label = None
    if label_value is not None:
        text = str(label_value).strip().lower()
        if text in _TRUE:
            label = "fraud"
        elif text in _FALSE:
            label = "legit"
        else:
            raise ContractError("bad_label", f"expected fraud/legit or 1/0, got {text!r}", "label")
    return record, label, scenario


def _json_rows(text: IO[str], invalid: Counter[str]) -> Iterator[dict[str, Any] | None]:
    for line in text:
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            invalid["unparseable"] += 1
            yield None
            continue
        if not isinstance(value, dict):
            invalid["not_an_object"] += 1
            yield None
            continue
        yield value


def _stamp(epoch_s: float) -> str:
    """The handbook's own time format, for comparing raw rows without parsing them."""
    return datetime.fromtimestamp(math.ceil(epoch_s), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _handbook_csv_rows(
    reader: Iterator[list[str]],
    header: list[str],
    since: float | None,
    until: float | None,
    stats: FileStats,
) -> Iterator[dict[str, Any] | None]:
    """Rows outside [since, until) that are not frauds cannot matter: skipped before any
    parsing (most of the 1.75M handbook rows are outside the benchmark's window)."""
    at, fraud = header.index("TX_DATETIME"), header.index("TX_FRAUD")
    low = "" if since is None else _stamp(since)
    high = "\uffff" if until is None else _stamp(until)
    width = len(header)
    for values in reader:
        if len(values) == width and values[fraud] != "1" and not low <= values[at] < high:
            stats.rows += 1
            stats.out_of_range += 1
            continue
        yield dict(zip(header, values, strict=False))


def read_file(
    path: Path,
    *,
    preset: Preset = "auto",
    label_delay_s: float,
    since: float | None = None,
    until: float | None = None,
    stats: FileStats | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Event]:
    """Transactions in [since, until) in file order, and the labels of every row.

    Labels of rows before `since` are still yielded: a merchant's fraud history from
    before the feature window counts, exactly as it would online.
    """
    stats = stats if stats is not None else FileStats()
    assert stats.invalid is not None
    fmt = file_format(path)
    text, position = open_text(path)
    with text:
        rows: Iterator[dict[str, Any] | None]
        if fmt == "csv":
            reader = csv.reader(text)
            header = next(reader, None)
            if header is None:
                return
            handbook = preset == "handbook" or (
                preset == "auto" and all(c in header for c in (*HANDBOOK_COLUMNS, "TX_FRAUD"))
            )
            if handbook:
                rows = _handbook_csv_rows(reader, header, since, until, stats)
            else:
                rows = (dict(zip(header, values, strict=False)) for values in reader)
        else:
            handbook = preset == "handbook"
            rows = _json_rows(text, stats.invalid)
        if handbook:
            logger.info("reading handbook data %s", kv(path=path, label_delay_s=label_delay_s))
        reported = 0
        for row in rows:
            stats.rows += 1
            if on_progress is not None and stats.rows - reported >= 20_000:
                reported = stats.rows
                on_progress(position.tell())
            if row is None:
                continue
            try:
                if handbook:
                    record, label, scenario = _handbook_row(row)
                else:
                    record, label, scenario = _generic_row(row, fmt == "csv")
                event_ts = parse_time(str(record.get("timestamp", "")))
                in_range = (since is None or event_ts >= since) and (
                    until is None or event_ts < until
                )
                if in_range:
                    record, event_ts = decode_transaction(orjson.dumps(record))
                available = _available(row, handbook, event_ts, label_delay_s)
            except ContractError as exc:
                stats.invalid[exc.reason] += 1
                continue
            except (KeyError, ValueError, TypeError):
                stats.invalid["schema_violation"] += 1
                continue
            if label is not None and (label == "fraud" or not handbook):
                stats.labels += 1
                yield Label(
                    record["transaction_id"],
                    record["merchant_id"],
                    record["user_id"],
                    label,
                    available,
                    str(scenario) if scenario is not None and label == "fraud" else None,
                )
            if in_range:
                stats.transactions += 1
                yield Transaction(record, event_ts)
            else:
                stats.out_of_range += 1
    if on_progress is not None:
        on_progress(position.tell())


def _available(row: dict[str, Any], handbook: bool, event_ts: float, delay_s: float) -> float:
    explicit = None if handbook else row.get("label_available_at")
    if explicit:
        return parse_time(str(explicit), "label_available_at")
    return event_ts + delay_s
