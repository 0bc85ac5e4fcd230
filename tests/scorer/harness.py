"""Runs the real scorer (`python -m scorer`) as a process against the test stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.processes import terminate
from tests.stack import TestStack, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ScorerWorld:
    """One isolated scorer deployment: its own topics, model, group and Redis keys."""

    stack: TestStack
    transactions: str
    scores: str
    alerts: str
    labels: str
    dlq: str
    labels_dlq: str
    model_name: str
    group: str = field(default_factory=lambda: f"scorer-{uuid.uuid4().hex[:8]}")
    key_prefix: str = field(default_factory=lambda: f"fx-{uuid.uuid4().hex[:8]}")
    extra_env: dict[str, str] = field(default_factory=dict)
    logs: Path = field(default_factory=lambda: REPO / ".run" / "test-logs")

    def env(self, instance: str, port: int) -> dict[str, str]:
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
                "TOPIC_SCORES": self.scores,
                "TOPIC_ALERTS": self.alerts,
                "TOPIC_LABELS": self.labels,
                "TOPIC_TRANSACTIONS_DLQ": self.dlq,
                "TOPIC_LABELS_DLQ": self.labels_dlq,
                "SCORER_GROUP_ID": self.group,
                "SCORER_LABELS_GROUP_ID": self.group + "-labels",
                "SCORER_INSTANCE_ID": instance,
                "SCORER_FEATURE_KEY_PREFIX": self.key_prefix,
                "SCORER_MODEL_POLL_S": "1",
                **self.extra_env,
            }
        )
        return env

    def start(self, instance: str = "a", supervised: bool = False) -> ScorerProcess:
        """`python -m scorer`; `supervised`: under launcher.supervise, as `make up` runs
        it, which starts it again whenever it exits non-zero."""
        port = free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{self.group}-{instance}-{time.time_ns()}.log"
        handle = log.open("wb")
        command = [sys.executable, "-m", "scorer"]
        if supervised:
            command = [sys.executable, "-m", "launcher.supervise", "--name", "scorer",
                       "--backoff-s", "0.5", "--", *command]  # fmt: skip
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env(instance, port),
            stdout=handle,
            stderr=subprocess.STDOUT,
            # Its own process group: a kill reaches a supervised scorer's child too.
            start_new_session=True,
        )
        return ScorerProcess(proc, port, log)


@dataclass
class ScorerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"scorer exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"scorer not ready after {timeout_s}s:\n{self.tail()}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        terminate(self.proc, timeout_s)
        return int(self.proc.returncode)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
