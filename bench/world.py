"""One isolated deployment of the real scorer (`python -m scorer` as a subprocess): its own
topics, consumer group, Redis key prefix and model, so the benchmark never touches anyone
else's data on a shared stack, and cleans up after itself."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from confluent_kafka.admin import AdminClient

from bench.config import Stack
from fraudcore.kafka import ensure_topics
from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT
from fraudcore.topics import TopicSpec

logger = logging.getLogger(__name__)
LOG_DIR = REPO_ROOT / "bench" / "results" / "logs"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class World:
    """Topics and names of one scorer deployment; `start` runs a scorer in it."""

    stack: Stack
    model_name: str
    partitions: int
    # "bx" + 6 hex digits: the merchant state keeps one offset per "topic:partition", so
    # the transactions topic ("bx1a2b3c-tx") is as long as the real "transactions" and the
    # memory figure is not inflated by the benchmark's naming.
    name: str = field(default_factory=lambda: f"bx{tag()[:6]}")
    env: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = {
            kind: f"{self.name}-{kind}"
            for kind in ("tx", "scores", "alerts", "labels", "dlq", "labels-dlq")
        }

    def key_prefix(self, run: str) -> str:
        """Each run over the topic keeps its own feature state."""
        return f"fx-{self.name}-{run}"

    def group(self, run: str) -> str:
        return f"{self.name}-{run}"

    @property
    def transactions(self) -> str:
        return self.topics["tx"]

    @property
    def scores(self) -> str:
        return self.topics["scores"]

    def create_topics(self) -> None:
        admin = AdminClient(self.stack.kafka)
        wide = ("tx", "scores", "alerts")
        specs = [
            TopicSpec(topic, self.partitions if kind in wide else 1)
            for kind, topic in self.topics.items()
        ]
        ensure_topics(admin, specs)
        self.created = [s.name for s in specs]

    def scorer_env(self, run: str, port: int, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "TOPIC_"))}
        env.update(
            {
                "FRAUD_ENV_FILE": os.devnull,
                "KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka_bootstrap,
                "REDIS_URL": self.stack.redis_url,
                "MLFLOW_TRACKING_URI": self.stack.mlflow_uri,
                "MODEL_NAME": self.model_name,
                "SCORER_HTTP_PORT": str(port),
                "TOPIC_TRANSACTIONS": self.transactions,
                "TOPIC_SCORES": self.topics["scores"],
                "TOPIC_ALERTS": self.topics["alerts"],
                "TOPIC_LABELS": self.topics["labels"],
                "TOPIC_TRANSACTIONS_DLQ": self.topics["dlq"],
                "TOPIC_LABELS_DLQ": self.topics["labels-dlq"],
                "SCORER_GROUP_ID": self.group(run),
                "SCORER_LABELS_GROUP_ID": self.group(run) + "-labels",
                "SCORER_INSTANCE_ID": "bench",
                "SCORER_FEATURE_KEY_PREFIX": self.key_prefix(run),
                # Leftovers of an interrupted run expire on their own.
                "SCORER_FEATURE_TTL_S": "7200",
                "LOG_LEVEL": "WARNING",
                **self.env,
                **extra,
            }
        )
        return env

    def start_scorer(self, run: str, **extra: str) -> ScorerProcess:
        """`python -m scorer` on this world's topics, as run `run` (group, key prefix)."""
        port = free_port()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"{self.name}-{run}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "scorer"],
            cwd=REPO_ROOT,
            env=self.scorer_env(run, port, **extra),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        return ScorerProcess(proc, port, log)

    def cleanup(self) -> None:
        """Delete this world's topics and Redis keys (nothing else)."""
        created, self.created = self.created, []
        if created:
            admin = AdminClient(self.stack.kafka)  # must outlive the futures
            futures = admin.delete_topics(created, operation_timeout=30)
            for topic, future in futures.items():
                try:
                    future.result(timeout=30)
                except Exception as exc:
                    logger.warning("topic not deleted %s", kv(topic=topic, error=exc))
        delete_keys(self.stack.redis_url, f"{self.key_prefix('')}*")


def delete_keys(redis_url: str, pattern: str) -> int:
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    client.close()
    return deleted


@dataclass
class ScorerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Seconds from now until /ready answers 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scorer exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"scorer not ready after {timeout_s:.0f}s:\n{self.tail()}")

    def metrics(self) -> dict[str, float]:
        """Every Prometheus sample, keyed 'name{labels}'."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return out

    def scored(self) -> float:
        return self.metrics().get("scorer_transactions_scored_total", 0.0)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
