"""One isolated deployment of the real services, run as child processes: its own topics,
consumer group, Redis key prefix and model, so a test, a benchmark or the handbook stream
evaluation never touches anyone else's data on a shared stack.

The services run exactly as in production, configured by their environment alone:
`FRAUD_ENV_FILE` points at nothing, so the root .env cannot mix other topics or addresses
in. This is the one harness for processes; tests, `python -m bench` and
`python -m bench.handbook_stream` all start the scorer through `Deployment.start_scorer`.
"""

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import redis
from confluent_kafka.admin import AdminClient

from fraudcore.kafka import ensure_topics
from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT, TopicSettings
from fraudcore.topics import TopicSpec
from scorer.slot_routing import SlotRouter, cluster_seeds

logger = logging.getLogger(__name__)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
# Settings of the caller's own shell that would leak into a child's configuration.
_FOREIGN = ("SCORER_", "TOPIC_", "PRODUCER_", "TRAINER_", "ALERTING_")


class StackAddresses(Protocol):
    """Where Kafka, Redis and MLflow answer (tests' TestStack and bench's Stack)."""

    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def redis_url(self) -> str: ...
    @property
    def mlflow_uri(self) -> str: ...


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_id() -> str:
    return uuid.uuid4().hex[:8]


def topic_names(name: str, transactions: str = "transactions") -> TopicSettings:
    """Every topic of a deployment called `name`, each prefixed by it."""
    return TopicSettings(
        topic_transactions=f"{name}-{transactions}",
        topic_scores=f"{name}-scores",
        topic_alerts=f"{name}-alerts",
        topic_labels=f"{name}-labels",
        topic_transactions_dlq=f"{name}-transactions.dlq",
        topic_alerts_dlq=f"{name}-alerts.dlq",
        topic_labels_dlq=f"{name}-labels.dlq",
    )


@dataclass
class Deployment:
    """Topics, consumer group, key prefix and model of one deployment, and the processes
    started in it. `env` holds settings (SCORER_X=...) given to every scorer it starts."""

    stack: StackAddresses
    model_name: str
    name: str = field(default_factory=lambda: f"dep-{short_id()}")
    group: str = ""
    key_prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path = REPO_ROOT / ".run" / "test-logs"
    naming: Callable[[str], TopicSettings] = topic_names
    processes: list[ServiceProcess] = field(default_factory=list)
    created_topics: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = self.naming(self.name)
        self.group = self.group or f"{self.name}-scorer"
        self.key_prefix = self.key_prefix or f"fx-{self.name}"

    def sibling(self, run: str) -> Deployment:
        """The same topics and model under a consumer group and key prefix of their own:
        another scoring run over the same input, with state of its own."""
        return Deployment(
            self.stack, self.model_name, name=self.name, group=f"{self.name}-{run}",
            key_prefix=f"{self.key_prefix}-{run}", env=self.env, log_dir=self.log_dir,
            naming=self.naming,
        )  # fmt: skip

    @property
    def transactions(self) -> str:
        return self.topics.topic_transactions

    @property
    def scores(self) -> str:
        return self.topics.topic_scores

    @property
    def alerts(self) -> str:
        return self.topics.topic_alerts

    @property
    def labels(self) -> str:
        return self.topics.topic_labels

    @property
    def kafka(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.stack.kafka_bootstrap}

    def create_topics(self, partitions: int) -> None:
        """transactions, scores and alerts with `partitions` each (a user's outputs stay in
        its partition), every other topic with one; three copies of each on a cluster of
        three brokers or more, as the cluster profile's own topics."""
        wide = {self.transactions, self.scores, self.alerts}
        specs = [
            TopicSpec(topic, partitions if topic in wide else 1)
            for topic in self.topics.model_dump().values()
        ]
        admin = AdminClient(self.kafka)
        brokers = len(admin.list_topics(timeout=30).brokers)
        ensure_topics(admin, specs, replicas=min(3, brokers))
        self.created_topics = [spec.name for spec in specs]

    def service_env(self, **extra: str) -> dict[str, str]:
        """The environment of any service of this deployment: the stack's addresses and
        this deployment's topics, over the caller's environment minus its service settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
        env.update(
            {
                "FRAUD_ENV_FILE": os.devnull,
                "KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka_bootstrap,
                "REDIS_URL": self.stack.redis_url,
                "MLFLOW_TRACKING_URI": self.stack.mlflow_uri,
                "MODEL_NAME": self.model_name,
                **{name.upper(): topic for name, topic in self.topics.model_dump().items()},
                **extra,
            }
        )
        return env

    def scorer_env(self, instance: str, port: int, **extra: str) -> dict[str, str]:
        return self.service_env(
            SCORER_HTTP_PORT=str(port),
            SCORER_GROUP_ID=self.group,
            SCORER_LABELS_GROUP_ID=self.group + "-labels",
            SCORER_INSTANCE_ID=instance,
            SCORER_FEATURE_KEY_PREFIX=self.key_prefix,
            **self.env,
            **extra,
        )

    def start_scorer(
        self, instance: str = "a", supervised: bool = False, env: dict[str, str] | None = None
    ) -> ServiceProcess:
        """`python -m scorer` in this deployment. `supervised`: under launcher.supervise,
        as `make up` runs it, which starts it again whenever it exits non-zero."""
        port = free_port()
        command = ["scorer"]
        if supervised:
            command = ["launcher.supervise", "--name", "scorer", "--backoff-s", "0.5",
                       "--", sys.executable, "-m", "scorer"]  # fmt: skip
        return self.spawn(
            f"scorer-{instance}", command, self.scorer_env(instance, port, **(env or {})), port
        )

    def start_producer(self, args: list[str], partitions: int) -> ServiceProcess:
        env = self.service_env(PRODUCER_METRICS_PORT="0", TRANSACTIONS_PARTITIONS=str(partitions))
        return self.spawn("producer", ["producer", *args], env, None)

    def spawn(
        self, label: str, module_args: list[str], env: dict[str, str], port: int | None
    ) -> ServiceProcess:
        """`python -m <module_args>` with its output in a log file of its own. In its own
        process group, so a kill also reaches a supervised service's child."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{self.name}-{label}-{time.time_ns()}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", *module_args],
                cwd=REPO_ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = ServiceProcess(label, proc, log, port)
        self.processes.append(process)
        logger.info("started %s %s", label, kv(pid=proc.pid, log=log))
        return process

    def cleanup(self, groups: bool = False) -> None:
        """Stop its processes, delete the topics it created, its Redis keys and, with
        `groups`, its consumer groups; nothing else."""
        for process in self.processes:
            process.stop()
        admin = AdminClient(self.kafka)  # must outlive the futures
        created, self.created_topics = self.created_topics, []
        if created:
            for topic, future in admin.delete_topics(created, operation_timeout=30).items():
                try:
                    future.result(timeout=30)
                except Exception as exc:
                    logger.warning("topic not deleted %s", kv(topic=topic, error=exc))
        if groups:
            delete_groups(admin, [self.group, self.group + "-labels"])
        try:
            delete_keys(self.stack.redis_url, f"{self.key_prefix}*")
        except redis.RedisError as exc:  # a test may leave its own Redis stopped
            logger.warning("keys not deleted %s", kv(prefix=self.key_prefix, error=exc))


@dataclass
class ServiceProcess:
    label: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Seconds until GET /ready answers 200; the process exiting ends the wait at once."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not self.running():
                raise RuntimeError(f"{self.label} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.label} not ready after {timeout_s:.0f}s:\n{self.tail()}")

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

    def kill(self) -> None:
        """SIGKILL to its whole process group."""
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (the services stop cleanly on it), SIGKILL if that takes too long."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s ignored SIGTERM, killing it %s", self.label, kv(pid=self.proc.pid)
                )
                self.kill()
        return int(self.proc.returncode)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def delete_keys(redis_url: str, pattern: str) -> int:
    """Unlink the keys matching `pattern` from the Redis of `redis_url`, or from every
    master of a Redis Cluster (redis+cluster://...); one key per command, since a
    cluster refuses a command whose keys are in different slots."""
    seeds = cluster_seeds(redis_url)
    if seeds:
        clients = [redis.Redis(*master) for master in SlotRouter(seeds).masters]
    else:
        clients = [redis.Redis.from_url(redis_url)]
    deleted = 0
    for client in clients:
        try:
            batch = client.pipeline(transaction=False)
            for i, key in enumerate(client.scan_iter(match=pattern, count=2000), 1):
                batch.unlink(key)
                if i % 2000 == 0:
                    deleted += sum(batch.execute())
            deleted += sum(batch.execute())
        finally:
            client.close()
    return deleted


def delete_groups(admin: AdminClient, groups: list[str], timeout_s: float = 60.0) -> None:
    # A group stays non-empty until its members' sessions time out when they did not leave
    # (the scorer is a static member), so deleting is retried for a while.
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
        if pending and time.monotonic() >= deadline:
            for group, error in failed:
                logger.warning("consumer group not deleted %s", kv(group=group, error=error))
            return
        if pending:
            time.sleep(2.0)
