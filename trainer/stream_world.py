"""A private deployment for the streaming benchmark: fresh topics, the real scorer and the
real producer as child processes, and a clean-up that removes only what it created.

Nothing of `scorer/` or `producer/` is imported: they run exactly as in production, set up
by their environment alone (`FRAUD_ENV_FILE` points at nothing, so the root .env cannot
mix other topics or addresses in).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from confluent_kafka.admin import AdminClient

from fraudcore.kafka import ensure_topics
from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT, TopicSettings
from fraudcore.topics import stack_topics

logger = logging.getLogger(__name__)

# Feature state of an interrupted run expires by itself (wall clock, not event time).
_STATE_TTL_S = 6 * 3600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """One `python -m <service>` process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        """Until GET /ready answers 200 (bounded; the process dying ends it at once)."""
        started = time.monotonic()
        attempt = 0
        while time.monotonic() - started < timeout_s:
            if not self.running():
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).status_code == 200:
                    logger.info("%s ready %s", self.name, kv(after_s=_since(started)))
                    return
            except httpx.HTTPError:
                pass
            attempt += 1
            if attempt % 25 == 0:
                logger.info("waiting for %s %s", self.name, kv(waited_s=_since(started)))
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.tail()}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (the services stop cleanly on it), SIGKILL if that takes too long."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s ignored SIGTERM, killing it %s", self.name, kv(pid=self.proc.pid)
                )
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _since(started: float) -> float:
    return round(time.monotonic() - started, 1)


@dataclass
class StreamWorld:
    """Topics, consumer groups, Redis key prefix and processes of one benchmark run."""

    kafka: dict[str, Any]
    kafka_bootstrap: str
    redis_url: str
    mlflow_uri: str
    model_name: str
    partitions: int = 6
    name: str = field(default_factory=lambda: f"hbstream-{uuid.uuid4().hex[:8]}")
    log_dir: Path = field(default_factory=lambda: REPO_ROOT / ".run" / "trainer")
    created: list[str] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = TopicSettings(
            topic_transactions=f"{self.name}-transactions",
            topic_scores=f"{self.name}-scores",
            topic_alerts=f"{self.name}-alerts",
            topic_labels=f"{self.name}-labels",
            topic_transactions_dlq=f"{self.name}-transactions.dlq",
            topic_alerts_dlq=f"{self.name}-alerts.dlq",
            topic_labels_dlq=f"{self.name}-labels.dlq",
        )
        self.group = f"{self.name}-scorer"
        self.key_prefix = f"fx-{self.name}"

    def create_topics(self) -> None:
        specs = stack_topics(self.topics, self.partitions)
        self.created = [s.name for s in specs]
        ensure_topics(AdminClient(self.kafka), specs)

    def _env(self, **extra: str) -> dict[str, str]:
        prefixes = ("SCORER_", "TOPIC_", "PRODUCER_", "TRAINER_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.update(
            {
                "FRAUD_ENV_FILE": os.devnull,
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
                **{name.upper(): value for name, value in self.topics.model_dump().items()},
                **extra,
            }
        )
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str], port: int | None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{self.name}-{name}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, proc, log, port)
        self.children.append(child)
        logger.info("started %s %s", name, kv(pid=proc.pid, log=log))
        return child

    def start_scorer(self) -> Child:
        port = free_port()
        env = self._env(
            REDIS_URL=self.redis_url,
            MLFLOW_TRACKING_URI=self.mlflow_uri,
            MODEL_NAME=self.model_name,
            SCORER_HTTP_PORT=str(port),
            SCORER_GROUP_ID=self.group,
            SCORER_LABELS_GROUP_ID=self.group + "-labels",
            SCORER_INSTANCE_ID="handbook-stream",
            SCORER_FEATURE_KEY_PREFIX=self.key_prefix,
            SCORER_FEATURE_TTL_S=str(_STATE_TTL_S),
        )
        return self._spawn("scorer", ["scorer"], env, port)

    def start_producer(self, args: list[str]) -> Child:
        env = self._env(PRODUCER_METRICS_PORT="0", TRANSACTIONS_PARTITIONS=str(self.partitions))
        return self._spawn("producer", ["producer", *args], env, None)

    def cleanup(self) -> None:
        """Stop the children, delete this run's topics, groups and Redis keys (only those)."""
        for child in self.children:
            code = child.stop()
            logger.info("stopped %s %s", child.name, kv(exit_code=code))
        admin = AdminClient(self.kafka)
        created, self.created = self.created, []
        if created:
            for topic, future in admin.delete_topics(created, operation_timeout=30).items():
                try:
                    future.result(timeout=30)
                except Exception as exc:
                    logger.warning("topic not deleted %s", kv(topic=topic, error=exc))
            logger.info("topics deleted %s", kv(count=len(created), prefix=self.name))
        self._delete_groups(admin, [self.group, self.group + "-labels"])
        deleted = delete_keys(self.redis_url, f"{self.key_prefix}:*")
        logger.info("feature state deleted %s", kv(keys=deleted, prefix=self.key_prefix))

    @staticmethod
    def _delete_groups(admin: AdminClient, groups: list[str], timeout_s: float = 60.0) -> None:
        # A group stays non-empty until its members' sessions time out when they did not
        # leave (the scorer is a static member; its label folder thread is not closed on
        # exit), so deleting is retried for a while.
        deadline = time.monotonic() + timeout_s
        pending = list(groups)
        while pending:
            failed = []
            for group, future in admin.delete_consumer_groups(pending, request_timeout=10).items():
                try:
                    future.result(timeout=15)
                except Exception as exc:
                    failed.append((group, exc))
            pending = [group for group, _ in failed]
            if not pending:
                return
            if time.monotonic() >= deadline:
                for group, error in failed:
                    logger.warning("consumer group not deleted %s", kv(group=group, error=error))
                return
            time.sleep(2.0)


def delete_keys(redis_url: str, pattern: str) -> int:
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=2000):
            batch.append(key)
            if len(batch) >= 2000:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted
