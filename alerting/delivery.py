"""Delivery of stored alerts: routing, per-user suppression, concurrent sends, DLQ.

Every (alert, sink) ends in exactly one final state, recorded in the database as soon as
it is known: delivered, suppressed (folded into a window whose summary is owed), or
dead-lettered. A restart skips what is recorded, so the only resend is of a notification
that was in flight when the process died; its Idempotency-Key lets the receiver drop it.

A notification the sink failed for good is recorded `dead_lettering` before its dead
letter is written, and `dead_lettered` once Kafka has it. A process that dies in between
writes the dead letter again after its restart (the DLQ may then hold it twice, with the
same `dlq.alert_id` and `dlq.sink`), and never sends it to that sink again: it could be
accepted this time, and be both delivered and dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from alerting.dlq import DeadLetters
from alerting.metrics import DELIVERED, DELIVERY_LATENCY, FAILED, SUPPRESSED, UNROUTED
from alerting.rules import Rules
from alerting.sinks import Notification, Outcome, Sink
from alerting.store import (
    DEAD_LETTERED,
    DEAD_LETTERING,
    AlertStore,
    DeliveryRecord,
    StoredAlert,
)
from alerting.store import DELIVERED as DELIVERED_STATE
from fraudcore.contracts import parse_time
from fraudcore.logs import kv

logger = logging.getLogger(__name__)

DLQ_FLUSH_TIMEOUT_S = 30.0
PRUNE_EVERY_S = 3600.0
KEEP_WINDOWS_S = 86_400.0


@dataclass(frozen=True)
class Job:
    alert: StoredAlert
    sink: str
    note: Notification
    window_id: int | None = None  # set for a window's summary
    # Set when the sink failed it for good and its dead letter may not have been written
    # (the process died meanwhile): it is dead-lettered again, not sent.
    failed: Outcome | None = None


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        rules: Rules,
        sinks: dict[str, Sink],
        dead_letters: DeadLetters,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.rules = rules
        self.sinks = sinks
        self.dead_letters = dead_letters
        self.stop = stop
        self.pool = ThreadPoolExecutor(rules.delivery.workers, thread_name_prefix="deliver")
        self._last_prune = 0.0

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for sink in self.sinks.values():
            sink.close()

    def deliver(self, batch: Sequence[StoredAlert]) -> bool:
        """Route and deliver a batch. True when every alert reached a final state; False
        when shutdown interrupted a retry (those alerts stay pending for the next run)."""
        return self._run(self._plan(batch))

    def deliver_due_summaries(self) -> bool:
        """Send the summary of every suppression window that closed with folded alerts."""
        now = time.time()
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            pruned = self.store.prune_windows(now - KEEP_WINDOWS_S)
            if pruned:
                logger.info("suppression windows pruned %s", kv(count=pruned))
        jobs = []
        due = self.store.due_summaries(now)
        owed = self.store.delivery_records(f"summary-{w.opened_by}" for w in due)
        for w in due:
            last = self.store.load_alert(w.last_folded or w.opened_by)
            if last is None:  # cannot happen while alerts are never deleted
                logger.error("summary without its alert %s", kv(window_id=w.window_id))
                continue
            note = Notification(
                kind="summary",
                alert=last.record,
                idempotency_key=f"summary-{w.opened_by}",
                count=w.folded,
                window=(w.start_ts, w.end_ts),
                max_score=w.max_score,
            )
            jobs.append(
                Job(
                    last,
                    w.sink,
                    note,
                    w.window_id,
                    _unfinished(owed.get((note.idempotency_key, w.sink))),
                )
            )
        return self._run(jobs)

    def _plan(self, batch: Sequence[StoredAlert]) -> list[Job]:
        window_s = self.rules.suppression.window_seconds
        recorded = self.store.delivery_records(a.alert_id for a in batch)
        planned: set[tuple[str, str]] = set()
        jobs: list[Job] = []
        folded: list[str] = []
        now = time.time()
        with self.store.tx() as conn:
            for alert in batch:
                record = alert.record
                age_s = now - parse_time(record["event_time"])
                sinks = self.rules.route(record["severity"], record["score"], age_s)
                # A sink this alert was planned for before is still owed its outcome, even
                # if the alert has since grown too old for the route.
                sinks += [s for aid, s in recorded if aid == alert.alert_id and s not in sinks]
                if not sinks:
                    UNROUTED.inc()
                for sink in sinks:
                    key = (alert.alert_id, sink)
                    # A replayed alert (same id) is delivered at most once per sink.
                    if key in planned:
                        continue
                    if key in recorded:
                        failed = _unfinished(recorded[key])
                        if failed is not None:  # only its dead letter is owed
                            planned.add(key)
                            note = Notification("alert", record, alert.alert_id)
                            jobs.append(Job(alert, sink, note, failed=failed))
                        continue
                    planned.add(key)
                    if window_s > 0:
                        window = self.store.current_window(conn, alert.user_id, sink, now)
                        if window is None:
                            self.store.open_window(
                                conn, alert.user_id, sink, alert.alert_id, now, window_s
                            )
                        elif window.opened_by != alert.alert_id:
                            self.store.fold(conn, window, alert.alert_id, record["score"])
                            folded.append(sink)
                            continue
                    jobs.append(Job(alert, sink, Notification("alert", record, alert.alert_id)))
        for sink in folded:
            SUPPRESSED.labels(sink).inc()
        return jobs

    def _send(self, job: Job) -> Outcome:
        sink = self.sinks.get(job.sink)
        if sink is None:  # a summary owed to a sink removed from the config since
            return Outcome(ok=False, attempts=0, error=f"sink {job.sink!r} is no longer configured")
        return sink.send(job.note, self.stop)

    def _run(self, jobs: list[Job]) -> bool:
        if not jobs:
            return True
        pending = {self.pool.submit(self._send, job): job for job in jobs if job.failed is None}
        failed = [(job, job.failed) for job in jobs if job.failed is not None]
        interrupted = False
        while pending:
            # Record whatever has finished, in one transaction: one row per send at low
            # rates (the smallest resend window), fewer commits under load.
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            delivered = []
            for future in done:
                job, outcome = pending.pop(future), future.result()
                if outcome.ok:
                    delivered.append((job, outcome))
                elif outcome.interrupted:
                    interrupted = True
                else:
                    failed.append((job, outcome))
            self._record(delivered, DELIVERED_STATE)
            now = time.time()
            for job, _outcome in delivered:
                DELIVERED.labels(job.sink, job.note.kind).inc()
                if job.note.kind == "alert":
                    DELIVERY_LATENCY.labels(job.sink).observe(
                        max(0.0, now - job.alert.processed_ts)
                    )
        if failed:
            # From here on the sink is not asked again, even if the process dies before
            # the dead letters are written: the restart writes them again.
            self._record(failed, DEAD_LETTERING)
            for job, outcome in failed:
                self.dead_letters.undeliverable(job.alert, job.note, job.sink, outcome)
            # Recorded as dead-lettered only once Kafka has the dead letter.
            self.dead_letters.flush(DLQ_FLUSH_TIMEOUT_S)
            self._record(failed, DEAD_LETTERED)
            for job, _outcome in failed:
                FAILED.labels(job.sink).inc()
        return not interrupted

    def _record(self, results: list[tuple[Job, Outcome]], state: str) -> None:
        if not results:
            return
        with self.store.tx() as conn:
            rows = []
            for job, outcome in results:
                row = DeliveryRecord(
                    job.note.idempotency_key, job.sink, state, outcome.attempts, outcome.error
                )
                if job.window_id is None:
                    rows.append(row)
                    continue
                # A summary: its window holds the final state; its own row only the
                # dead letter's progress.
                if state in (DEAD_LETTERING, DEAD_LETTERED):
                    rows.append(row)
                if state != DEAD_LETTERING:
                    self.store.close_summary(conn, job.window_id, state)
            self.store.record_deliveries(rows, conn)


def _unfinished(record: DeliveryRecord | None) -> Outcome | None:
    """The failure whose dead letter may not have been written, if `record` is one."""
    if record is None or record.state != DEAD_LETTERING:
        return None
    return Outcome(ok=False, attempts=record.attempts, error=record.last_error)
