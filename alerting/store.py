"""The alert store (SQLAlchemy 2 Core): alerts, delivery state per (alert, sink), and
per-user suppression windows. SQLite by default, PostgreSQL (or any database whose
dialect has INSERT ... ON CONFLICT) when ALERTS_DATABASE_URL says so.

Times are epoch seconds (floats) so SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from fraudcore.logs import kv

logger = logging.getLogger(__name__)

metadata = MetaData()

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(200), primary_key=True),
    Column("transaction_id", String(200), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("event_ts", Float, nullable=False),
    Column("processed_ts", Float, nullable=False),
    Column("received_ts", Float, nullable=False),
    Column("payload", Text, nullable=False),  # the alert as received, JSON
    Column("source_topic", String(255), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", Integer, nullable=False),
    Column("status", String(16), nullable=False, default="open"),  # open | reviewed
    Column("verdict", String(16)),  # fraud | legit
    Column("note", Text),
    Column("reviewed_ts", Float),
    Index("ix_alerts_event", "event_ts", "alert_id"),
    Index("ix_alerts_user", "user_id", "event_ts"),
)

DELIVERED, SUPPRESSED, DEAD_LETTERED = "delivered", "suppressed", "dead_lettered"
# Not final: the sink has failed it for good and its dead letter is being written. Recorded
# before the dead letter, so that a process that dies before `dead_lettered` is recorded
# writes the dead letter again after its restart instead of sending the alert again.
DEAD_LETTERING = "dead_lettering"

# Outcomes are written, the final ones and `dead_lettering`: a missing row means "not
# delivered yet". A summary's own row (`summary-<opened_by>`, the key it is sent with) is
# written only on its way to the DLQ; its window says whether it went out.
deliveries = Table(
    "deliveries",
    metadata,
    Column("alert_id", String(200), primary_key=True),
    Column("sink", String(100), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("updated_ts", Float, nullable=False),
)

windows = Table(
    "suppression_windows",
    metadata,
    Column("window_id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(200), nullable=False),
    Column("sink", String(100), nullable=False),
    Column("opened_by", String(200), nullable=False),  # the alert sent when it opened
    Column("start_ts", Float, nullable=False),
    Column("end_ts", Float, nullable=False),
    Column("folded", Integer, nullable=False, default=0),
    Column("last_folded", String(200)),  # the alert the summary shows
    Column("max_score", Float),
    Column("summary_state", String(16)),  # None until the summary is delivered/dead-lettered
    Index("ix_windows_user_sink", "user_id", "sink", "end_ts"),
    Index("ix_windows_due", "summary_state", "end_ts"),
)


@dataclass(frozen=True)
class StoredAlert:
    """An alert ready for the store: the validated record plus where it came from."""

    record: dict[str, Any]
    raw: bytes
    event_ts: float
    processed_ts: float
    topic: str
    partition: int
    offset: int

    @property
    def alert_id(self) -> str:
        return str(self.record["alert_id"])

    @property
    def user_id(self) -> str:
        return str(self.record["user_id"])


class DeliveryRecord(NamedTuple):
    alert_id: str
    sink: str
    state: str
    attempts: int
    last_error: str | None = None


@dataclass(frozen=True)
class Window:
    window_id: int
    user_id: str
    sink: str
    opened_by: str
    start_ts: float
    end_ts: float
    folded: int
    last_folded: str | None
    max_score: float | None


@dataclass(frozen=True)
class AlertQuery:
    user_id: str | None = None
    severities: tuple[str, ...] = ()
    status: str | None = None
    from_ts: float | None = None
    to_ts: float | None = None
    limit: int = 50
    offset: int = 0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the API read while the consumer writes; NORMAL is durable across a process
    # crash (only an OS crash can lose the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class AlertStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        name = engine.dialect.name
        if name == "sqlite":
            self._insert: Any = sqlite.insert
        elif name == "postgresql":
            self._insert = postgresql.insert
        else:
            raise ValueError(f"ALERTS_DATABASE_URL: unsupported database {name!r}")

    @classmethod
    def connect(cls, url: str, timeout_s: float) -> AlertStore:
        """Connect and create the schema, waiting up to timeout_s for the database."""
        store = cls(make_engine(url))
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                metadata.create_all(store.engine)
                logger.info("database ready %s", kv(dialect=store.engine.dialect.name))
                return store
            except OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"database not reachable after {timeout_s:.0f}s: {exc.orig}"
                    ) from exc
                logger.info("waiting for database %s", kv(attempt=attempt, error=exc.orig))
                time.sleep(min(2.0, 0.2 * attempt))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # --- alerts ---------------------------------------------------------------

    def insert_alerts(self, items: Sequence[StoredAlert]) -> set[str]:
        """Store each alert once by alert_id; returns the ids that were new."""
        if not items:
            return set()
        now = time.time()
        rows = [
            {
                "alert_id": a.alert_id,
                "transaction_id": a.record["transaction_id"],
                "user_id": a.user_id,
                "severity": a.record["severity"],
                "score": a.record["score"],
                "event_ts": a.event_ts,
                "processed_ts": a.processed_ts,
                "received_ts": now,
                "payload": a.raw.decode("utf-8"),
                "source_topic": a.topic,
                "source_partition": a.partition,
                "source_offset": a.offset,
                "status": "open",
            }
            for a in items
        ]
        stmt = (
            self._insert(alerts)
            .on_conflict_do_nothing(index_elements=["alert_id"])
            .returning(alerts.c.alert_id)
        )
        with self.tx() as conn:
            return {row[0] for row in conn.execute(stmt, rows)}

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(alerts).where(alerts.c.alert_id == alert_id)).mappings().first()
            )
            if row is None:
                return None
            sent = conn.execute(
                select(deliveries)
                .where(deliveries.c.alert_id == alert_id)
                .order_by(deliveries.c.sink)
            ).mappings()
            return {**row, "deliveries": [dict(d) for d in sent]}

    def load_alert(self, alert_id: str) -> StoredAlert | None:
        row = self.get_alert(alert_id)
        if row is None:
            return None
        return StoredAlert(
            record=orjson.loads(row["payload"]),
            raw=row["payload"].encode("utf-8"),
            event_ts=row["event_ts"],
            processed_ts=row["processed_ts"],
            topic=row["source_topic"],
            partition=row["source_partition"],
            offset=row["source_offset"],
        )

    def list_alerts(self, q: AlertQuery) -> tuple[list[dict[str, Any]], int]:
        """One page, newest event first, plus the total matching count."""
        conditions = []
        if q.user_id:
            conditions.append(alerts.c.user_id == q.user_id)
        if q.severities:
            conditions.append(alerts.c.severity.in_(q.severities))
        if q.status:
            conditions.append(alerts.c.status == q.status)
        if q.from_ts is not None:
            conditions.append(alerts.c.event_ts >= q.from_ts)
        if q.to_ts is not None:
            conditions.append(alerts.c.event_ts < q.to_ts)
        page = (
            select(alerts)
            .where(*conditions)
            .order_by(alerts.c.event_ts.desc(), alerts.c.alert_id.desc())
            .limit(q.limit)
            .offset(q.offset)
        )
        count = select(func.count()).select_from(alerts).where(*conditions)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(page).mappings()]
            total = int(conn.execute(count).scalar_one())
        return rows, total

    def mark_reviewed(self, alert_id: str, verdict: str, note: str | None) -> None:
        with self.tx() as conn:
            conn.execute(
                update(alerts)
                .where(alerts.c.alert_id == alert_id)
                .values(status="reviewed", verdict=verdict, note=note, reviewed_ts=time.time())
            )

    # --- deliveries -----------------------------------------------------------

    def delivery_records(self, alert_ids: Iterable[str]) -> dict[tuple[str, str], DeliveryRecord]:
        """The recorded outcomes of these alerts (or summary keys), by (id, sink)."""
        ids = list(alert_ids)
        if not ids:
            return {}
        c = deliveries.c
        stmt = select(c.alert_id, c.sink, c.state, c.attempts, c.last_error).where(
            c.alert_id.in_(ids)
        )
        with self.engine.connect() as conn:
            return {
                (r.alert_id, r.sink): DeliveryRecord(
                    r.alert_id, r.sink, r.state, r.attempts, r.last_error
                )
                for r in conn.execute(stmt)
            }

    def record_deliveries(
        self, rows: Sequence[DeliveryRecord], conn: Connection | None = None
    ) -> None:
        """Write outcomes, in one transaction (the caller's, when given)."""
        if not rows:
            return
        now = time.time()
        stmt = self._insert(deliveries)
        stmt = stmt.on_conflict_do_update(
            index_elements=["alert_id", "sink"],
            set_={c: stmt.excluded[c] for c in ("state", "attempts", "last_error", "updated_ts")},
        )
        params = [{**r._asdict(), "updated_ts": now} for r in rows]
        if conn is not None:
            conn.execute(stmt, params)
            return
        with self.tx() as own:
            own.execute(stmt, params)

    # --- suppression windows --------------------------------------------------

    def current_window(
        self, conn: Connection, user_id: str, sink: str, now: float
    ) -> Window | None:
        row = (
            conn.execute(
                select(windows)
                .where(windows.c.user_id == user_id, windows.c.sink == sink, windows.c.end_ts > now)
                .order_by(windows.c.end_ts.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return _window(row) if row else None

    def open_window(
        self, conn: Connection, user_id: str, sink: str, alert_id: str, now: float, length: float
    ) -> None:
        conn.execute(
            windows.insert().values(
                user_id=user_id,
                sink=sink,
                opened_by=alert_id,
                start_ts=now,
                end_ts=now + length,
                folded=0,
            )
        )

    def fold(self, conn: Connection, window: Window, alert_id: str, score: float) -> None:
        """Count an alert into an open window instead of notifying it."""
        best = score if window.max_score is None else max(window.max_score, score)
        conn.execute(
            update(windows)
            .where(windows.c.window_id == window.window_id)
            .values(folded=windows.c.folded + 1, last_folded=alert_id, max_score=best)
        )
        self.record_deliveries([DeliveryRecord(alert_id, window.sink, SUPPRESSED, 0)], conn)

    def due_summaries(self, now: float, limit: int = 500) -> list[Window]:
        """Closed windows that folded alerts and whose summary is not out yet."""
        stmt = (
            select(windows)
            .where(windows.c.summary_state.is_(None), windows.c.end_ts <= now, windows.c.folded > 0)
            .order_by(windows.c.end_ts)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_window(r) for r in conn.execute(stmt).mappings()]

    def prune_windows(self, before: float) -> int:
        """Forget windows that closed before `before` and owe no summary."""
        stmt = windows.delete().where(
            windows.c.end_ts < before,
            (windows.c.folded == 0) | windows.c.summary_state.is_not(None),
        )
        with self.tx() as conn:
            return int(conn.execute(stmt).rowcount or 0)

    def close_summary(self, conn: Connection, window_id: int, state: str) -> None:
        conn.execute(
            update(windows).where(windows.c.window_id == window_id).values(summary_state=state)
        )


def _window(row: Any) -> Window:
    return Window(
        window_id=row["window_id"],
        user_id=row["user_id"],
        sink=row["sink"],
        opened_by=row["opened_by"],
        start_ts=row["start_ts"],
        end_ts=row["end_ts"],
        folded=row["folded"],
        last_folded=row["last_folded"],
        max_score=row["max_score"],
    )
