"""Where the test stack comes from (see conftest.py).

1. external: FRAUD_TEST_KAFKA_BOOTSTRAP, FRAUD_TEST_REDIS_URL, FRAUD_TEST_MLFLOW_URI
   (and optionally FRAUD_TEST_PROMETHEUS_URL, and FRAUD_TEST_KAFKA_METRICS: host:port of
   the broker's JMX exporter, which the observability test needs) name a running stack;
2. testcontainers, when a Docker engine answers;
3. the local launcher (profile `test`): real processes on the TEST_* ports of .env, run
   folder .run/test; what this pytest run started is stopped at its end, and a stack that
   was already running (someone's `python -m launcher up --profile test`) is reused.

Failing to get a service is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

from launcher import probes
from launcher.kafka import (
    JMX_EXPORTER_CONFIG,
    KAFKA_VERSION,
    broker_properties,
    fetch_jmx_agent,
    new_cluster_id,
)
from launcher.layout import layout_for
from launcher.runner import Launcher
from launcher.services import INFRA

DOCKER_INFO_TIMEOUT_S = 15
CONTAINER_START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class TestStack:
    __test__ = False  # a dataclass named Test*, not a test class

    kafka_bootstrap: str
    redis_url: str
    mlflow_uri: str
    prometheus_url: str | None = None
    # host:port where the broker's JMX exporter agent serves /metrics; None: unknown.
    kafka_metrics: str | None = None
    source: str = "external"


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=DOCKER_INFO_TIMEOUT_S
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


@contextmanager
def provide_stack() -> Iterator[TestStack]:
    source: AbstractContextManager[TestStack]
    if os.environ.get("FRAUD_TEST_KAFKA_BOOTSTRAP"):
        source = _external()
    elif docker_engine_available():
        source = _containers()
    else:
        source = _launched()
    with source as running:
        yield running


@contextmanager
def _external() -> Iterator[TestStack]:
    missing = [
        name
        for name in ("FRAUD_TEST_REDIS_URL", "FRAUD_TEST_MLFLOW_URI")
        if not os.environ.get(name)
    ]
    if missing:
        raise RuntimeError(
            f"FRAUD_TEST_KAFKA_BOOTSTRAP is set but {', '.join(missing)} is not: "
            "an external test stack needs all three"
        )
    yield TestStack(
        kafka_bootstrap=os.environ["FRAUD_TEST_KAFKA_BOOTSTRAP"],
        redis_url=os.environ["FRAUD_TEST_REDIS_URL"],
        mlflow_uri=os.environ["FRAUD_TEST_MLFLOW_URI"],
        prometheus_url=os.environ.get("FRAUD_TEST_PROMETHEUS_URL"),
        kafka_metrics=os.environ.get("FRAUD_TEST_KAFKA_METRICS"),
    )


@contextmanager
def _launched() -> Iterator[TestStack]:
    layout = layout_for("test")
    launcher = Launcher(layout)
    try:
        try:
            launcher.up(list(INFRA))
        except Exception as exc:
            raise RuntimeError(
                f"could not start the local test stack in {layout.run_dir} "
                f"(logs: {layout.run_dir}/*.log): {exc}"
            ) from exc
        yield TestStack(
            kafka_bootstrap=layout.kafka_bootstrap,
            redis_url=layout.redis_url,
            mlflow_uri=layout.mlflow_uri,
            prometheus_url=layout.prometheus_url,
            kafka_metrics=f"127.0.0.1:{layout.kafka_metrics_port}",
            source="launcher",
        )
    finally:
        # Only what this pytest run started: a stack someone else brought up stays up.
        if launcher.started:
            launcher.down(launcher.started)


# --- testcontainers ---------------------------------------------------------------------
# No Docker engine runs on the development machines, so this path is exercised only where
# one is available; it stays small and reuses the launcher's broker settings and probes.


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _containers() -> Iterator[TestStack]:
    from testcontainers.core.container import DockerContainer

    import mlflow

    # The advertised address must carry the host-side port, so it is chosen here and
    # bound explicitly instead of letting Docker pick one.
    kafka_port = free_port()
    broker = {
        **broker_properties(9092, 9093),
        "listeners": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093",
        "advertised.listeners": f"PLAINTEXT://localhost:{kafka_port}",
    }
    kafka = (
        DockerContainer(f"apache/kafka:{KAFKA_VERSION}")
        .with_bind_ports(9092, kafka_port)
        .with_exposed_ports(9404)
        .with_volume_mapping(fetch_jmx_agent(), "/opt/jmx-exporter/agent.jar")
        .with_volume_mapping(JMX_EXPORTER_CONFIG, "/etc/jmx-exporter/kafka.yml")
    )
    # The apache/kafka image turns KAFKA_FOO_BAR into foo.bar in its server.properties
    # (KAFKA_OPTS excepted: it goes to the JVM, here the launcher's JMX exporter agent).
    for key, value in broker.items():
        kafka.with_env("KAFKA_" + key.upper().replace(".", "_"), value)
    kafka.with_env("CLUSTER_ID", new_cluster_id())
    kafka.with_env(
        "KAFKA_OPTS", "-javaagent:/opt/jmx-exporter/agent.jar=9404:/etc/jmx-exporter/kafka.yml"
    )
    redis = DockerContainer("redis:7").with_exposed_ports(6379)
    tracking = (
        DockerContainer(f"ghcr.io/mlflow/mlflow:v{mlflow.__version__}")
        .with_exposed_ports(5000)
        .with_command("mlflow server --host 0.0.0.0 --port 5000 --workers 1")
        .with_env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    )
    with ExitStack() as started:
        for container in (kafka, redis, tracking):
            started.enter_context(container)
        host = redis.get_container_host_ip()
        stack = TestStack(
            kafka_bootstrap=f"localhost:{kafka_port}",
            redis_url=f"redis://{host}:{redis.get_exposed_port(6379)}/0",
            mlflow_uri=f"http://{host}:{tracking.get_exposed_port(5000)}",
            kafka_metrics=f"{kafka.get_container_host_ip()}:{kafka.get_exposed_port(9404)}",
            source="testcontainers",
        )
        for what, probe in (
            ("kafka container", partial(probes.kafka_ok, stack.kafka_bootstrap)),
            ("kafka metrics", partial(probes.http_ok, f"http://{stack.kafka_metrics}/metrics")),
            ("redis container", partial(probes.redis_ok, stack.redis_url)),
            ("mlflow container", partial(probes.http_ok, f"{stack.mlflow_uri}/health")),
        ):
            probes.wait_until(probe, what=what, timeout_s=CONTAINER_START_TIMEOUT_S)
        yield stack
