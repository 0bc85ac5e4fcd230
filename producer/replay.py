"""Replay of a transactions file (CSV or JSONL, optionally gzipped), streamed row by row.

A column mapping turns each row into a transaction; an optional label column becomes a
label on the labels topic (never a transaction field). A row that cannot become a valid
transaction is yielded as Rejected, naming the field and the reason, for the DLQ.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from fraudcore.contracts import SCHEMA_VERSION, format_time, known_fields
from producer import metrics
from producer.events import Event, Origin, Rejected, make_event

DAY_S = 86400.0
REQUIRED = ("transaction_id", "user_id", "merchant_id", "amount", "timestamp")
NUMBERS = ("amount", "lat", "lon")
FRAUD_VALUES = frozenset({"1", "true", "t", "yes", "y", "fraud"})
LEGIT_VALUES = frozenset({"0", "false", "f", "no", "n", "legit"})
# Targets of --map besides the transaction fields: they feed the label only.
LABEL_TARGETS = ("label", "scenario")
UNLABELLED = "unlabelled"  # metric scenario of a transaction replayed without a label


@dataclass(frozen=True)
class Preset:
    mapping: Mapping[str, str]  # target field -> source column
    scenario_names: Mapping[str, str] = field(default_factory=dict)
    label_delay_s: float = 2 * DAY_S
    label_source: str = "chargeback"
    sorted_by_time: bool = False  # rows are in event-time order: stop at --until


PRESETS = {
    # The Fraud Detection Handbook's simulated data (see its README): labels are the
    # handbook simulator's ground truth, known after the book's 7-day delay.
    "handbook": Preset(
        mapping={
            "transaction_id": "TRANSACTION_ID",
            "timestamp": "TX_DATETIME",
            "user_id": "CUSTOMER_ID",
            "merchant_id": "TERMINAL_ID",
            "amount": "TX_AMOUNT",
            "label": "TX_FRAUD",
            "scenario": "TX_FRAUD_SCENARIO",
        },
        scenario_names={
            "1": "high_amount",
            "2": "compromised_terminal",
            "3": "compromised_customer",
        },
        label_delay_s=7 * DAY_S,
        label_source="simulator",
        sorted_by_time=True,
    ),
}


@dataclass(frozen=True)
class ReplayConfig:
    path: Path
    mapping: Mapping[str, str]
    file_format: str | None = None  # "csv" or "jsonl"; None: from the file name
    scenario_names: Mapping[str, str] = field(default_factory=dict)
    label_source: str = "chargeback"
    label_delay_s: float = 2 * DAY_S
    label_jitter_s: float = 0.0
    time_format: str | None = None  # strptime format; None: ISO 8601 ('T' or ' ')
    limit: int | None = None  # rows taken (inside the time range), good or bad
    since: float | None = None  # inclusive
    until: float | None = None  # exclusive
    sorted_by_time: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        targets = known_fields("transactions") | set(LABEL_TARGETS)
        unknown = sorted(set(self.mapping) - targets)
        if unknown:
            raise ValueError(
                f"--map: unknown target field(s) {unknown}; known: {', '.join(sorted(targets))}"
            )
        missing = [f for f in REQUIRED if f not in self.mapping]
        if missing:
            raise ValueError(f"--map: no column mapped to required field(s) {missing}")
        if "schema_version" in self.mapping:
            raise ValueError("--map: schema_version is set by the producer, not mapped")


def configure(
    path: Path,
    preset: str | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
    scenario_names: Mapping[str, str] | None = None,
    label_source: str | None = None,
    label_delay_s: float | None = None,
    **options: Any,
) -> ReplayConfig:
    """A ReplayConfig from a preset (if any) with the explicit values on top of it."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    base = PRESETS.get(preset or "", Preset(mapping={}))
    return ReplayConfig(
        path=path,
        mapping={**base.mapping, **(mapping or {})},
        scenario_names={**base.scenario_names, **(scenario_names or {})},
        label_source=label_source or base.label_source,
        label_delay_s=base.label_delay_s if label_delay_s is None else label_delay_s,
        sorted_by_time=base.sorted_by_time,
        **options,
    )


def file_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path.name}; use --format csv|jsonl")


class _PastUntil(Exception):
    """A time-ordered file has gone past --until: nothing more to read."""


class RowError(Exception):
    def __init__(self, reason: str, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.field, self.detail = reason, field, detail


class ReplaySource:
    """Iterate to get Events and Rejected rows; bytes_read()/total_bytes follow the file
    position (for a .gz, the position in the compressed file)."""

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        self.format = file_format(config.path, config.file_format)
        self.total_bytes = os.path.getsize(config.path)
        self.rows_read = 0
        self.rows_skipped = 0
        self._raw: IO[bytes] | None = None
        self._last_position = 0
        self._rng = np.random.default_rng([config.seed, 2])
        self._name = str(config.path)
        if self.format == "csv":  # a mapping that does not fit fails now, not mid-run
            with self._open() as (_, stream):
                self._csv_index(stream)

    @contextmanager
    def _open(self) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
        """(the file, its decompressed content)."""
        with open(self.config.path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield raw, unzipped  # type: ignore[misc]
            else:
                yield raw, raw

    def bytes_read(self) -> int:
        if self._raw is None:
            return 0
        return self._last_position if self._raw.closed else self._raw.tell()

    def __iter__(self) -> Iterator[Event | Rejected]:
        with self._open() as (raw, stream):
            self._raw = raw
            rows = self._csv_rows(stream) if self.format == "csv" else self._jsonl_rows(stream)
            taken = 0
            try:
                for item in rows:
                    if self.config.limit is not None and taken >= self.config.limit:
                        return
                    if item is not None:  # None: outside the time range
                        taken += 1
                        yield item
            except _PastUntil:
                return
            finally:
                rows.close()  # now, while the file is still open
                self._last_position = raw.tell()

    # --- readers -------------------------------------------------------------------------

    def _csv_index(self, stream: IO[bytes]) -> dict[str, int]:
        """Read the header row and check the mapping against it."""
        text = _text_of(stream)
        try:
            return self._index_of(next(csv.reader(text), None))
        finally:
            text.detach()

    def _index_of(self, header: list[str] | None) -> dict[str, int]:
        """Target field -> column position; ValueError naming mapped columns not there."""
        if header is None:
            raise ValueError(f"{self._name} is empty (no header row)")
        columns = {name.strip(): i for i, name in enumerate(header)}
        absent = {t: c for t, c in self.config.mapping.items() if c not in columns}
        if absent:
            raise ValueError(
                f"{self._name}: mapped column(s) not in the header: "
                + ", ".join(f"{t}={c}" for t, c in absent.items())
                + f" (columns: {', '.join(header)})"
            )
        return {t: columns[c] for t, c in self.config.mapping.items()}

    def _csv_rows(self, stream: IO[bytes]) -> Generator[Event | Rejected | None]:
        text = _text_of(stream)
        try:
            reader = csv.reader(text)
            index = self._index_of(next(reader, None))
            for values in reader:
                if not values:  # a blank line
                    continue
                self.rows_read += 1
                origin = Origin(self._name, reader.line_num, values=values)
                width = len(values)  # a short row lacks its last fields
                yield self._row({t: values[i] for t, i in index.items() if i < width}, origin)
        finally:
            text.detach()  # the wrapper must not close the file: its owner does

    def _jsonl_rows(self, stream: IO[bytes]) -> Generator[Event | Rejected | None]:
        for line_no, line in enumerate(stream, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            self.rows_read += 1
            origin = Origin(self._name, line_no, raw=line)
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Rejected("unparseable", None, f"not valid JSON: {exc}", origin)
                continue
            if not isinstance(record, dict):
                yield Rejected("not_an_object", None, "expected a JSON object", origin)
                continue
            mapping = self.config.mapping
            yield self._row({t: record[c] for t, c in mapping.items() if c in record}, origin)

    # --- one row -------------------------------------------------------------------------

    def _row(self, picked: dict[str, Any], origin: Origin) -> Event | Rejected | None:
        """An Event, a Rejected row, or None (outside the time range)."""
        key = _text(picked.get("user_id")).encode("utf-8", "surrogateescape") or None
        cfg = self.config
        try:
            # The time first: rows outside the range cost no more than that.
            event_ts = self._time(picked.get("timestamp"))
            if not self._in_range(event_ts):
                return None
            tx = self._transaction(picked, event_ts)
            if "label" not in cfg.mapping:
                return Event(tx, event_ts, None, event_ts, UNLABELLED, origin)
            fraud = self._fraud(picked.get("label"))
            scenario = _text(picked.get("scenario")) or None
            if scenario is not None:
                scenario = cfg.scenario_names.get(scenario, scenario)
            delay = cfg.label_delay_s
            if cfg.label_jitter_s > 0:
                delay += math.floor(float(self._rng.random()) * cfg.label_jitter_s * 1000) / 1000
            return make_event(
                tx,
                event_ts,
                fraud=fraud,
                scenario=scenario if fraud else None,
                source=cfg.label_source,
                delay_s=delay,
                origin=origin,
            )
        except RowError as exc:
            return Rejected(exc.reason, exc.field, exc.detail, origin, key)

    def _in_range(self, event_ts: float) -> bool:
        cfg = self.config
        if cfg.until is not None and event_ts >= cfg.until and cfg.sorted_by_time:
            raise _PastUntil
        if (cfg.since is not None and event_ts < cfg.since) or (
            cfg.until is not None and event_ts >= cfg.until
        ):
            self.rows_skipped += 1
            metrics.SKIPPED_ROWS.inc()
            return False
        return True

    def _transaction(self, picked: dict[str, Any], event_ts: float) -> dict[str, Any]:
        tx: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for target, value in picked.items():
            if target in LABEL_TARGETS:
                continue
            if target == "timestamp":
                tx["timestamp"] = format_time(event_ts)
            elif target in NUMBERS:
                number = _number(target, value)
                if number is not None:
                    tx[target] = number
            else:
                text = _text(value)
                if text:
                    tx[target] = text
        for name in REQUIRED:
            if name not in tx:
                raise RowError("missing_field", name, "required field is missing or empty")
        return tx

    def _time(self, value: Any) -> float:
        text = _text(value)
        if not text:
            raise RowError("missing_field", "timestamp", "required field is missing or empty")
        try:
            fmt = self.config.time_format
            if fmt == "epoch":
                return float(text)
            parsed = datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text)
        except ValueError:
            wanted = self.config.time_format or "ISO 8601"
            raise RowError(
                "bad_timestamp", "timestamp", f"not a time ({wanted}): {text!r}"
            ) from None
        if parsed.tzinfo is None:  # a time without offset is UTC
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()

    def _fraud(self, value: Any) -> bool:
        text = _text(value).lower()
        if text in FRAUD_VALUES:
            return True
        if text in LEGIT_VALUES:
            return False
        raise RowError("bad_label", "label", f"not a fraud/legit value: {text!r}")


def _text(value: Any) -> str:
    if type(value) is str:  # every CSV field: the common case first
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON 12.0 as an id reads "12"
    return str(value).strip()


def _number(target: str, value: Any) -> float | None:
    if isinstance(value, bool):
        raise RowError(f"bad_{target}", target, f"not a number: {value!r}")
    if value is None or (isinstance(value, str) and not value.strip()):
        if target == "amount":
            raise RowError("missing_field", target, "required field is missing or empty")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowError(f"bad_{target}", target, f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise RowError(f"bad_{target}", target, f"must be a finite number, got {value!r}")
    return number


def _text_of(stream: IO[bytes]) -> io.TextIOWrapper:
    # surrogateescape: a byte that is not UTF-8 survives to the DLQ instead of ending the run
    return io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")


def mapping_from_flags(flags: Sequence[str]) -> dict[str, str]:
    """['amount=TX_AMOUNT', ...] -> {'amount': 'TX_AMOUNT'}."""
    mapping = {}
    for flag in flags:
        target, sep, column = flag.partition("=")
        if not sep or not target.strip() or not column.strip():
            raise ValueError(f"--map wants field=COLUMN, got {flag!r}")
        mapping[target.strip()] = column.strip()
    return mapping
