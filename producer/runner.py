"""The produce loop: pace the source by the event-time clock and --rate, check every record
against its contract, publish transactions at once and labels once event time reaches
their available_at, dead-letter bad replay rows, stop on a limit or a signal."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
from prometheus_client import Counter

from fraudcore.contracts import ContractError, decode_label, decode_transaction, format_time
from fraudcore.logs import kv
from producer import metrics
from producer.clock import EventClock, TokenBucket
from producer.events import Event, Rejected
from producer.kafka_output import KafkaOutput, Stopped
from producer.labels import PendingLabels

logger = logging.getLogger(__name__)

SERVICE_EVERY = 128  # records between two polls of the Kafka client
IDLE_STEP_S = 0.2  # longest sleep between two looks at the stop flag
PROGRESS_LOG_S = 10.0


@dataclass(frozen=True)
class RunLimits:
    count: int | None = None  # transactions to produce
    duration_s: float | None = None  # wall seconds
    rate: float = 0.0  # transactions per second, 0 = unlimited
    flush_labels: bool = True  # at the end, publish labels not yet due (else drop them)
    flush_timeout_s: float = 30.0


@dataclass
class RunSummary:
    source: str
    transactions: int = 0
    labels: int = 0
    labels_dropped: int = 0
    dead_lettered: int = 0
    validation_failures: int = 0
    last_event_ts: float | None = None
    wall_s: float = 0.0
    stopped_by: str = "end_of_input"
    undelivered: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    delivery_failures: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.undelivered == 0 and not any(self.delivery_failures.values())


class Runner:
    def __init__(
        self,
        source: Iterable[Event | Rejected],
        output: KafkaOutput,
        clock: EventClock,
        limits: RunLimits,
        stop: threading.Event,
        source_name: str,
        on_tick: Callable[[RunSummary], None] | None = None,
    ) -> None:
        self.source = source
        self.output = output
        self.clock = clock
        self.limits = limits
        self.stop = stop
        self.bucket = TokenBucket(limits.rate)
        self.labels = PendingLabels()
        self.watermark = float("-inf")  # every transaction up to here has been produced
        self.summary = RunSummary(source=source_name)
        self.on_tick = on_tick
        self._tx_metric: dict[str, Counter] = {}  # scenario -> child, looked up once
        self._label_metric = {s: metrics.LABELS.labels(s) for s in ("fraud", "legit")}
        self._began = 0.0
        self._deadline = float("inf")
        self._next_log = 0.0

    def run(self) -> RunSummary:
        self._began = time.monotonic()
        if self.limits.duration_s is not None:
            self._deadline = self._began + self.limits.duration_s
        self._next_log = self._began + PROGRESS_LOG_S
        try:
            self._loop()
        except Stopped:
            self.summary.stopped_by = "signal"
        self._finish()
        return self.summary

    # --- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        s = self.summary
        if self.limits.count == 0:
            s.stopped_by = "count"
            return
        for n, item in enumerate(self.source, 1):
            if n % SERVICE_EVERY == 0:
                self._service(0.0)
            if self._should_stop():
                return
            if isinstance(item, Rejected):
                self._count_failure("replay", item.reason)
                self._dead_letter(item)
                continue
            self.clock.anchor(item.event_ts)
            if not self._wait_for_clock(item.event_ts) or not self._wait_for_token():
                return
            self._produce(item)
            if self.limits.count is not None and s.transactions >= self.limits.count:
                s.stopped_by = "count"
                return

    def _should_stop(self) -> bool:
        if self.stop.is_set():
            self.summary.stopped_by = "signal"
            return True
        if time.monotonic() >= self._deadline:
            self.summary.stopped_by = "duration"
            return True
        return False

    def _wait_for_clock(self, event_ts: float) -> bool:
        while (wait := self.clock.wall_seconds_until(event_ts)) > 0:
            # Nothing happens before event_ts, so the stream is complete up to the clock.
            self._advance(min(self.clock.now(), event_ts))
            self._service(min(wait, IDLE_STEP_S))
            if self._should_stop():
                return False
        return True

    def _wait_for_token(self) -> bool:
        while (wait := self.bucket.wait_time()) > 0:
            self._service(min(wait, IDLE_STEP_S))
            if self._should_stop():
                return False
        self.bucket.take()
        return True

    def _produce(self, event: Event) -> None:
        s = self.summary
        try:
            tx_raw = orjson.dumps(event.tx)
            decode_transaction(tx_raw)
            label_raw = None
            if event.label is not None:
                label_raw = orjson.dumps(event.label)
                decode_label(label_raw)
        except ContractError as exc:
            self._contract_failure(event, exc)
            return
        except orjson.JSONEncodeError as exc:  # e.g. text that is not valid UTF-8
            self._contract_failure(event, ContractError("unencodable", str(exc)))
            return
        key = event.tx["user_id"].encode()
        self.output.send("transactions", key, tx_raw)
        child = self._tx_metric.get(event.scenario)
        if child is None:
            child = self._tx_metric[event.scenario] = metrics.TRANSACTIONS.labels(event.scenario)
        child.inc()
        s.transactions += 1
        s.last_event_ts = event.event_ts
        if event.label is not None and label_raw is not None:
            self.labels.add(
                event.available_at,
                event.tx["transaction_id"].encode(),
                label_raw,
                event.label["label"],
            )
        self._advance(event.event_ts)

    def _advance(self, watermark: float) -> None:
        """Event time has reached `watermark`: publish the labels now due."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        for key, value, label in self.labels.due(watermark):
            self._send_label(key, value, label)

    def _send_label(self, key: bytes, value: bytes, label: str, interruptible: bool = True) -> None:
        self.output.send("labels", key, value, interruptible=interruptible)
        self._label_metric[label].inc()
        self.summary.labels += 1

    def _count_failure(self, source: str, reason: str) -> None:
        self.summary.validation_failures += 1
        metrics.VALIDATION_FAILURES.labels(source, reason).inc()

    def _contract_failure(self, event: Event, exc: ContractError) -> None:
        self._count_failure("simulator" if event.origin is None else "replay", exc.reason)
        if event.origin is None:
            # The simulator built it: a bug, never something to publish.
            logger.error(
                "simulated record breaks its contract, not sent %s",
                kv(
                    reason=exc.reason,
                    field=exc.field,
                    detail=exc.detail,
                    transaction_id=event.tx.get("transaction_id"),
                ),
            )
            return
        key = str(event.tx.get("user_id", "")).encode() or None
        self._dead_letter(Rejected(exc.reason, exc.field, exc.detail, event.origin, key))

    def _dead_letter(self, rejected: Rejected) -> None:
        origin = rejected.origin
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", rejected.reason.encode()),
            ("field", (rejected.field or "").encode()),
            ("detail", rejected.detail.encode()),
            ("source", b"producer"),
            ("source_file", origin.source_file.encode()),
            ("source_line", str(origin.line).encode()),
        ]
        self.output.send("dlq", rejected.key, origin.row(), headers)
        metrics.DEAD_LETTERED.labels(rejected.reason).inc()
        self.summary.dead_lettered += 1
        if self.summary.dead_lettered <= 10 or self.summary.dead_lettered % 1000 == 0:
            logger.warning(
                "row rejected, sent to the DLQ %s",
                kv(
                    reason=rejected.reason,
                    field=rejected.field,
                    detail=rejected.detail,
                    source=f"{origin.source_file}:{origin.line}",
                    rejected=self.summary.dead_lettered,
                ),
            )

    def _service(self, timeout: float) -> None:
        """Serve delivery callbacks (waiting up to `timeout`), refresh gauges, log progress."""
        self.output.poll(timeout)
        self.output.check()
        if self.summary.last_event_ts is not None:
            metrics.EVENT_TIME_LAG.set(time.time() - self.summary.last_event_ts)
        metrics.PENDING_LABELS.set(len(self.labels))
        now = time.monotonic()
        if self.on_tick is not None:
            self.on_tick(self.summary)
        if now >= self._next_log:
            self._next_log = now + PROGRESS_LOG_S
            self._log_progress(now)

    def _log_progress(self, now: float) -> None:
        s = self.summary
        elapsed = max(now - self._began, 1e-9)
        logger.info(
            "progress %s",
            kv(
                transactions=s.transactions,
                labels=s.labels,
                pending_labels=len(self.labels),
                dead_lettered=s.dead_lettered,
                tx_per_s=round(s.transactions / elapsed, 1),
                event_time=self._event_time_text(),
            ),
        )

    def _event_time_text(self) -> str:
        ts = self.summary.last_event_ts
        return format_time(ts) if ts is not None else "-"

    # --- the end -------------------------------------------------------------------------

    def _finish(self) -> None:
        s = self.summary
        pending = len(self.labels)
        if self.limits.flush_labels:
            # A finite run ends with complete ground truth; each label still carries its
            # available_at, which consumers must respect.
            for key, value, label in self.labels.drain():
                self._send_label(key, value, label, interruptible=False)
        s.labels_dropped = len(self.labels)
        if s.labels_dropped:
            logger.warning(
                "labels not yet due were not published %s",
                kv(dropped=s.labels_dropped, pending_at_end=pending),
            )
        s.undelivered = self.output.flush(self.limits.flush_timeout_s)
        s.wall_s = time.monotonic() - self._began
        s.delivered = dict(self.output.delivered)
        s.delivery_failures = dict(self.output.failed)
        metrics.PENDING_LABELS.set(len(self.labels))
        if s.last_event_ts is not None:
            metrics.EVENT_TIME_LAG.set(time.time() - s.last_event_ts)
