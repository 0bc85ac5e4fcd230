"""Real processes for the live observability test: Prometheus, the Redis exporter, the
alerting service and the producer, with their configuration."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from fraudcore.contracts import format_time
from tests.observability.sources import REPO, RULE_FILES
from tests.processes import terminate
from tests.stack import free_port


@dataclass
class Proc:
    """A subprocess with its log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None
    ) -> Proc:
        log = logs / f"{name}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        return cls(name, proc, log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        terminate(self.proc, timeout_s)


def wait_http(url: str, proc: Proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited before {url} answered\n{proc.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout_s}s\n{proc.tail()}")


def prometheus_config(targets: dict[str, str], source: Path) -> dict[str, Any]:
    """The committed prometheus.yml with its rule files, each job's target replaced by
    the process started here, and 1 s scrape and rule intervals (so a short test sees
    rates and evaluated rules). Jobs absent from `targets` must not exist."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s",
                        "evaluation_interval": "1s"}  # fmt: skip
    config["rule_files"] = [str(path) for path in RULE_FILES]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    missing = jobs - set(targets)
    assert not missing, f"no process for scrape jobs {missing}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    # Jobs the committed file does not have (yet): e.g. the Redis exporter.
    for name in sorted(set(targets) - jobs):
        config["scrape_configs"].append(
            {"job_name": name, "static_configs": [{"targets": [targets[name]]}]}
        )
    return config


def alerting_rules(broken_url: str) -> str:
    """Routes every alert to a log sink and to a webhook nobody listens on: the second
    fails for good after one retry, which is what the delivery-failure panels and the
    AlertDeliveryFailing rule are about. Suppression is on so repeats are suppressed."""
    return f"""
[delivery]
max_attempts = 2
timeout_seconds = 1.0
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.1

[suppression]
window_seconds = 300

[sinks.log]
type = "log"

[sinks.broken]
type = "webhook"
url = "{broken_url}"

[[routes]]
name = "everything"
sinks = ["log", "broken"]
"""


def alerting_env(
    bootstrap: str, topics: dict[str, str], port: int, api_key: str, workdir: Path
) -> dict[str, str]:
    rules = workdir / "alerting-rules.toml"
    rules.write_text(alerting_rules(f"http://127.0.0.1:{free_port()}/hook"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALERTING_", "ALERTS_", "TOPIC_", "KAFKA_"))
    }
    env.update(
        FRAUD_ENV_FILE=os.devnull,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC_ALERTS=topics["alerts"],
        TOPIC_ALERTS_DLQ=topics["alerts_dlq"],
        TOPIC_LABELS=topics["labels"],
        ALERTING_HTTP_HOST="127.0.0.1",
        ALERTING_HTTP_PORT=str(port),
        ALERTING_API_KEY=api_key,
        ALERTS_DATABASE_URL=f"sqlite:///{workdir / 'alerts.db'}",
        ALERTING_GROUP_ID=f"alerting-obs-{uuid.uuid4().hex[:8]}",
        ALERTING_RULES_FILE=str(rules),
        ALERTING_POLL_TIMEOUT_S="0.2",
    )
    return env


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def require_binary(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} not found: make install (Debian package) provides it"
    return path


def producer_argv(seed: int) -> list[str]:
    """`python -m producer` at 30 transactions a second, more fraud than by default
    (alerts in a short run), and labels due after 5 s so ground truth flows back within
    the test. Its event time starts at noon UTC two days ago and runs unpaced under the
    rate cap: in real time the simulated population sleeps at European night, and a test
    run then at night saw a transaction every 10 s."""
    noon = (time.time() // 86_400 - 2) * 86_400 + 12 * 3_600
    return [
        *python_module("producer"),
        "--users=300", "--merchants=50", "--tx-per-user-day=7200", "--rate=30",
        "--speed=0", f"--start={format_time(noon)}",
        "--fraud-rate=0.05", "--label-delay=5s", f"--seed={seed}",
        f"--id-prefix=obs{seed}", "--duration=10m", "--no-create-topics",
    ]  # fmt: skip


def producer_env(bootstrap: str, topics: dict[str, str], port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PRODUCER_", "TOPIC_", "KAFKA_", "TRANSACTIONS_"))
    }
    env.update(
        FRAUD_ENV_FILE=os.devnull,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC_TRANSACTIONS=topics["transactions"],
        TOPIC_LABELS=topics["labels"],
        TOPIC_TRANSACTIONS_DLQ=topics["dlq"],
        TRANSACTIONS_PARTITIONS="3",
        PRODUCER_METRICS_PORT=str(port),
    )
    return env


def retrain_history(bootstrap: str, topics: dict[str, str]) -> None:
    """Five days of a small world with labels a day late, on the retrainer's own topics:
    the live topics get their first fraud only after minutes of event time, too late for
    a retrain to have figures within the test."""
    argv = [
        *python_module("producer"),
        "--users=200", "--merchants=60", "--tx-per-user-day=20", "--speed=0",
        "--start=2026-01-01T00:00:00Z", "--count=20000", "--fraud-rate=0.03",
        "--label-delay=1d", "--seed=5", "--no-progress", "--metrics-port=0",
        "--no-create-topics",
    ]  # fmt: skip
    env = producer_env(
        bootstrap,
        {
            "transactions": topics["retrain_transactions"],
            "labels": topics["retrain_labels"],
            "dlq": topics["retrain_dlq"],
        },
        0,
    )
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def retrainer_env(
    bootstrap: str, topics: dict[str, str], port: int, mlflow_uri: str, model_name: str
) -> dict[str, str]:
    """`python -m trainer schedule` on the topics retrain_history filled, retraining every
    5 s into a model of its own (the scorer keeps its model)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRAINER_", "TOPIC_", "KAFKA_", "MLFLOW_", "MODEL_"))
    }
    env.update(
        FRAUD_ENV_FILE=os.devnull,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC_TRANSACTIONS=topics["retrain_transactions"],
        TOPIC_LABELS=topics["retrain_labels"],
        MLFLOW_TRACKING_URI=mlflow_uri,
        MODEL_NAME=model_name,
        TRAINER_EXPERIMENT=model_name,
        TRAINER_METRICS_PORT=str(port),
        TRAINER_RETRAIN_EVERY="5s",
        TRAINER_LABEL_DELAY="1d",
        TRAINER_WARMUP="1d",
    )
    return env
