"""Throughput benchmark: alerts stored and delivered per second to a local webhook.

    python -m bench.alerting --bootstrap localhost:19092 --alerts 5000

Creates its own uniquely named topics (deleted afterwards), runs `python -m alerting` as a
subprocess with a fresh SQLite file and a webhook sink pointing at a receiver in this
process, publishes the alerts in one Kafka transaction (as the scorer does) and times
from the first publish until every alert is both received by the webhook and stored.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from fraudcore.contracts import format_time
from fraudcore.kafka import ensure_topics
from fraudcore.topics import TopicSpec

REPO_ROOT = Path(__file__).resolve().parents[1]


class CountingReceiver:
    """Answers 200 to every POST and counts Idempotency-Keys."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.last_at = 0.0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real webhook receivers do

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    outer.keys[self.headers.get("Idempotency-Key", "")] += 1
                    outer.last_at = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _alert(i: int, run: str) -> dict[str, Any]:
    now = format_time(time.time())
    tx = f"bench-{run}-{i}"
    return {
        "schema_version": 1,
        "alert_id": f"alert-{tx}",
        "transaction_id": tx,
        "user_id": f"bench-user-{run}-{i % 997}",
        "transaction": {"transaction_id": tx, "merchant_id": "m-1", "amount": 250.0},
        "score": 0.93,
        "threshold": 0.8,
        "severity": "high",
        "model_name": "fraud-detector",
        "model_version": "1",
        "reasons": [{"feature": "amount", "value": 250.0, "text": "Amount far above usual"}],
        "features": {"amount": 250.0},
        "event_time": now,
        "processed_at": now,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.alerting",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=8, help="delivery workers")
    parser.add_argument("--batch", type=int, default=500, help="consumer batch size")
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    topics = {k: f"bench-{k}-{run}" for k in ("alerts", "dlq", "labels")}
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    ensure_topics(
        admin,
        [
            TopicSpec(topics["alerts"], 6),
            TopicSpec(topics["dlq"], 1),
            TopicSpec(topics["labels"], 1),
        ],
    )
    receiver = CountingReceiver()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp, "rules.toml")
        rules.write_text(
            f"[delivery]\nworkers = {args.workers}\n[suppression]\nwindow_seconds = 0\n"
            f'[sinks.hook]\ntype = "webhook"\nurl = "{receiver.url}"\n'
            '[[routes]]\nname = "all"\nsinks = ["hook"]\n'
        )
        Path(tmp, "empty.env").touch()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ALERT", "TOPIC_"))},
            "FRAUD_ENV_FILE": str(Path(tmp, "empty.env")),
            "KAFKA_BOOTSTRAP_SERVERS": args.bootstrap,
            "TOPIC_ALERTS": topics["alerts"],
            "TOPIC_ALERTS_DLQ": topics["dlq"],
            "TOPIC_LABELS": topics["labels"],
            "ALERTING_HTTP_HOST": "127.0.0.1",
            "ALERTING_HTTP_PORT": str(port),
            "ALERTING_API_KEY": f"bench-only-{run}",
            "ALERTS_DATABASE_URL": f"sqlite:///{tmp}/alerts.db",
            "ALERTING_GROUP_ID": f"bench-{run}",
            "ALERTING_RULES_FILE": str(rules),
            "ALERTING_BATCH_SIZE": str(args.batch),
            "LOG_LEVEL": "WARNING",
        }
        service = subprocess.Popen([sys.executable, "-m", "alerting"], cwd=REPO_ROOT, env=env)
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            return _measure(args, run, topics["alerts"], receiver, api, service)
        finally:
            service.terminate()
            service.wait(30)
            admin.delete_topics(list(topics.values()), operation_timeout=10)


def _measure(
    args: argparse.Namespace,
    run: str,
    topic: str,
    receiver: CountingReceiver,
    api: httpx.Client,
    service: subprocess.Popen[bytes],
) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            if api.get("/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if service.poll() is not None or time.monotonic() > deadline:
            sys.stderr.write("alerting did not become ready\n")
            return 1
        time.sleep(0.2)
    producer = Producer(
        {"bootstrap.servers": args.bootstrap, "transactional.id": f"bench-{run}", "linger.ms": 5}
    )
    producer.init_transactions(30)
    started = time.monotonic()
    producer.begin_transaction()
    for i in range(args.alerts):
        alert = _alert(i, run)
        producer.produce(topic, key=alert["user_id"].encode(), value=orjson.dumps(alert))
        producer.poll(0)
    producer.commit_transaction(60)
    published = time.monotonic() - started
    deadline = time.monotonic() + 600
    while len(receiver.keys) < args.alerts and time.monotonic() < deadline:
        time.sleep(0.1)
    delivered_at = receiver.last_at
    stored = api.get("/alerts", params={"limit": 1}).json()["total"]
    elapsed = delivered_at - started
    duplicates = sum(c - 1 for c in receiver.keys.values())
    sys.stdout.write(
        f"alerts={args.alerts} published_in={published:.2f}s delivered={len(receiver.keys)} "
        f"stored={stored} duplicates={duplicates} elapsed={elapsed:.2f}s "
        f"rate={len(receiver.keys) / elapsed:.0f} alerts/s "
        f"(workers={args.workers} batch={args.batch})\n"
    )
    return 0 if len(receiver.keys) == args.alerts == stored and not duplicates else 1


if __name__ == "__main__":
    sys.exit(main())
