"""Test helpers for the alerting service: alerts, Kafka I/O, the service as a subprocess,
and a scriptable webhook receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Message, Producer

from fraudcore.contracts import format_time
from tests.processes import terminate
from tests.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_alert(
    user_id: str,
    *,
    severity: str = "high",
    score: float = 0.91,
    event_ts: float | None = None,
    transaction_id: str | None = None,
    merchant_id: str = "m-test",
    amount: float = 420.0,
) -> dict[str, Any]:
    """A valid alerts.v1 record; alert_id derived from the transaction like the scorer's."""
    tx_id = transaction_id or f"tx-{uuid.uuid4().hex[:16]}"
    event = time.time() if event_ts is None else event_ts
    return {
        "schema_version": 1,
        "alert_id": f"alert-{tx_id}",
        "transaction_id": tx_id,
        "user_id": user_id,
        "transaction": {
            "schema_version": 1,
            "transaction_id": tx_id,
            "user_id": user_id,
            "merchant_id": merchant_id,
            "amount": amount,
            "currency": "EUR",
            "timestamp": format_time(event),
        },
        "score": score,
        "threshold": 0.8,
        "severity": severity,
        "model_name": "fraud-detector",
        "model_version": "7",
        "reasons": [
            {
                "feature": "amount_zscore",
                "value": 6.2,
                "usual": 0.1,
                "text": f"Amount {amount:.2f} EUR is 6.2 standard deviations above this card's usual",
            },
            {
                "feature": "tx_count_1h",
                "value": 9,
                "usual": 1,
                "text": "9 transactions in the last hour; usually 1",
            },
        ],
        "features": {"amount_zscore": 6.2, "tx_count_1h": 9.0, "distance_km": None},
        "event_time": format_time(event),
        "processed_at": format_time(time.time()),
    }


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[dict[str, Any] | bytes | None],
    keys: Sequence[str | None] | None = None,
) -> None:
    """Publish inside one Kafka transaction, as the scorer does."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"test-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i, record in enumerate(records):
        if isinstance(record, dict):
            value: bytes | None = json.dumps(record).encode()
            key = record.get("user_id")
        else:
            value, key = record, None
        if keys is not None:
            key = keys[i]
        producer.produce(topic, key=key.encode() if key else None, value=value)
    producer.commit_transaction(30)


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list[Message]:
    """Read `count` messages from the start of `topic` (fewer if the timeout passes)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def headers_of(msg: Message) -> dict[str, str]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode() if isinstance(v, bytes) else str(v or "") for k, v in pairs}


def wait_until(check: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()


def fresh_database(workdir: Path) -> str:
    """A SQLite file in the test's directory; with FRAUD_TEST_ALERTS_POSTGRES_URL (a server
    URL such as postgresql+psycopg://postgres@127.0.0.1:5432/postgres), a new database on
    that server instead, to run the same tests against PostgreSQL."""
    server = os.environ.get("FRAUD_TEST_ALERTS_POSTGRES_URL")
    if not server:
        return f"sqlite:///{workdir / 'alerts.db'}"
    from sqlalchemy import create_engine, make_url, text

    name = f"alerts_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


@dataclass
class ServiceConfig:
    bootstrap: str
    alerts_topic: str
    dlq_topic: str
    labels_topic: str
    workdir: Path
    group_id: str = field(default_factory=lambda: f"alerting-test-{uuid.uuid4().hex[:12]}")
    api_key: str = field(default_factory=lambda: f"test-key-{uuid.uuid4().hex}")
    port: int = field(default_factory=free_port)
    rules: str = (
        '[suppression]\nwindow_seconds = 0\n\n[sinks.log]\ntype = "log"\n\n'
        '[[routes]]\nname = "all"\nsinks = ["log"]\n'
    )

    db_url: str = ""

    def __post_init__(self) -> None:
        self.db_url = self.db_url or fresh_database(self.workdir)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        rules_file = self.workdir / "rules.toml"
        rules_file.write_text(self.rules)
        empty_env = self.workdir / "empty.env"
        empty_env.touch()
        # Nothing leaks in from the developer's shell or the root .env.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ALERTING_", "ALERTS_", "TOPIC_", "KAFKA_"))
        }
        env.update(
            FRAUD_ENV_FILE=str(empty_env),
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            TOPIC_ALERTS=self.alerts_topic,
            TOPIC_ALERTS_DLQ=self.dlq_topic,
            TOPIC_LABELS=self.labels_topic,
            ALERTING_HTTP_HOST="127.0.0.1",
            ALERTING_HTTP_PORT=str(self.port),
            ALERTING_API_KEY=self.api_key,
            ALERTS_DATABASE_URL=self.db_url,
            ALERTING_GROUP_ID=self.group_id,
            ALERTING_RULES_FILE=str(rules_file),
            ALERTING_STARTUP_TIMEOUT_S="30",
            ALERTING_POLL_TIMEOUT_S="0.2",
            ALERTING_SESSION_TIMEOUT_MS="6000",  # the broker's minimum: fast takeover
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


class Service:
    """`python -m alerting` as a subprocess, its log in the work directory."""

    def __init__(self, config: ServiceConfig, **extra_env: str) -> None:
        self.config = config
        self.log_path = config.workdir / f"alerting-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alerting"],
            cwd=REPO_ROOT,
            env=config.env(**extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=config.base_url, timeout=15.0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 45.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"alerting exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"alerting not ready in {timeout_s}s:\n{self.log()}")

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if not terminate(self.proc, timeout_s):
            raise AssertionError(f"no clean stop in {timeout_s}s:\n{self.log()}")
        self.http.close()
        self._log.close()
        return int(self.proc.returncode)

    def wait_killed(self, timeout_s: float = 20.0) -> int:
        code = self.proc.wait(timeout_s)
        self.http.close()
        self._log.close()
        return int(code)

    def alerts(self, **params: Any) -> dict[str, Any]:
        response = self.http.get("/alerts", params=params)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


@dataclass
class Request:
    key: str | None
    body: dict[str, Any]
    status: int


class Receiver:
    """A webhook endpoint on a free local port. `decide(key, n)` (n = how many times this
    key arrived, from 1) returns an HTTP status to answer, or ("sleep", seconds, status),
    or a callable run before answering 200 (used to kill the service mid-request)."""

    def __init__(self, decide: Callable[[str | None, int], Any] | None = None) -> None:
        self.decide = decide or (lambda _key, _n: 200)
        self.requests: list[Request] = []
        self.arrivals: Counter[str | None] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Idempotency-Key")
                with receiver.lock:  # counted on arrival: a slow answer is still "seen"
                    receiver.arrivals[key] += 1
                    seen = receiver.arrivals[key]
                action = receiver.decide(key, seen)
                status = 200
                if isinstance(action, tuple):
                    time.sleep(action[1])
                    status = action[2]
                elif callable(action):
                    action()
                else:
                    status = int(action)
                with receiver.lock:
                    receiver.requests.append(Request(key, body, status))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) or died

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def accepted(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def raw_counts(self) -> Counter[str | None]:
        """Every accepted request by key: what a receiver without dedupe would act on."""
        return Counter(r.key for r in self.accepted())

    def deduped(self) -> dict[str | None, Request]:
        """What a receiver honouring Idempotency-Key acts on: the first of each key."""
        out: dict[str | None, Request] = {}
        for r in self.accepted():
            out.setdefault(r.key, r)
        return out
