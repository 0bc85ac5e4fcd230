"""What each launched service is: command, ports, health probe, data, preparation."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from confluent_kafka.admin import AdminClient

from fraudcore.kafka import ensure_topics
from fraudcore.logs import kv
from fraudcore.topics import stack_topics
from launcher import kafka, probes
from launcher.apps import APPS, AppService, missing_entry_point
from launcher.layout import Layout
from launcher.prometheus import write_local_config

logger = logging.getLogger(__name__)

INFRA = ("kafka", "redis", "redis-exporter", "mlflow", "prometheus")


@dataclass(frozen=True)
class Service:
    name: str
    ports: tuple[int, ...]
    argv: tuple[str, ...]
    # Strings the running process's command line contains (see launcher.process).
    fingerprint: tuple[str, ...]
    probe: Callable[[], bool]
    timeout_s: float
    # Removed before a fresh start (test profile); created again by `prepare`.
    data_dir: Path | None = None
    prepare: Callable[[], None] | None = None
    # Runs once the service is healthy (creating the stack's topics).
    on_healthy: Callable[[], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    # What `probe` checks, for log lines and errors.
    health: str = ""
    # Why it cannot be started yet (an app whose package has no entry point); "" = it can.
    missing: str = ""
    # Started only after the model bootstrap (see launcher.apps).
    needs_model: bool = False
    # Required variables the launcher generates for a local run when unset (launcher.apps).
    secrets: tuple[str, ...] = ()


def _kafka(layout: Layout) -> Service:
    home = layout.run_dir / "kafka"
    config, data = home / "server.properties", home / "data"
    libs = kafka.libs_dir()
    agent = kafka.jmx_agent_option(kafka.jmx_agent_jar(), layout.kafka_metrics_port)
    metrics = layout.kafka_metrics_url

    def prepare() -> None:
        kafka.fetch_jars()
        kafka.fetch_jmx_agent()
        properties = kafka.broker_properties(layout.kafka_port, layout.kafka_controller_port)
        kafka.write_server_properties(config, {**properties, "log.dirs": str(data)})
        kafka.format_storage(libs, config, data)

    def create_topics() -> None:
        if layout.topics is None:
            return
        admin = AdminClient({"bootstrap.servers": layout.kafka_bootstrap})
        specs = stack_topics(layout.topics, layout.transactions_partitions)
        created = ensure_topics(admin, specs)
        logger.info("stack topics ready %s", kv(topics=len(specs), created=len(created)))

    def healthy() -> bool:
        # Its metrics too: without them the broker panels are empty and
        # KafkaNoActiveController fires.
        return probes.kafka_ok(layout.kafka_bootstrap) and probes.http_ok(metrics)

    return Service(
        name="kafka",
        ports=(layout.kafka_port, layout.kafka_controller_port, layout.kafka_metrics_port),
        argv=tuple(kafka.broker_argv(libs, config, agent)),
        fingerprint=("kafka.Kafka", str(config)),
        probe=healthy,
        timeout_s=120,
        data_dir=home,
        prepare=prepare,
        on_healthy=create_topics,
        health=f"kafka metadata at {layout.kafka_bootstrap}, GET {metrics}",
    )


def _redis(layout: Layout) -> Service:
    data = layout.run_dir / "redis"
    port = str(layout.redis_port)
    return Service(
        name="redis",
        ports=(layout.redis_port,),
        # "-::1": also listen on IPv6 loopback when the host has it, so `localhost`
        # works whichever address it resolves to first. The append-only file is the
        # persistence; RDB snapshots on top of it (Redis's default `save` rules) forked
        # the server every minute under the scorer's write rate, for a second copy that
        # a restart does not even read. The file is rewritten when it has grown 9x rather
        # than 2x: the scorer rewrites every user it sees, and at 5,000 tx/s the default
        # forked a rewrite every ~10 s (Redis CPU 0.35-0.37 -> 0.27-0.31 of a core, two
        # A/B pairs); the price is a larger file between rewrites.
        argv=("redis-server", "--port", port, "--bind", "127.0.0.1", "-::1", "--dir", str(data),
              "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
              "--auto-aof-rewrite-percentage", "800",
              "--daemonize", "no", "--protected-mode", "no"),
        # Redis rewrites its process title to "redis-server <addr>:<port>".
        fingerprint=("redis-server", f":{port}"),
        probe=partial(probes.redis_ok, layout.redis_url),
        timeout_s=30,
        data_dir=data,
        prepare=lambda: data.mkdir(parents=True, exist_ok=True),
        health=f"PING {layout.redis_url}",
    )  # fmt: skip


def _mlflow(layout: Layout) -> Service:
    home = layout.run_dir / "mlflow"
    port = str(layout.mlflow_port)
    return Service(
        name="mlflow",
        ports=(layout.mlflow_port,),
        argv=(sys.executable, "-m", "mlflow", "server",
              "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
              "--artifacts-destination", str(home / "mlartifacts"),
              "--host", "127.0.0.1", "--port", port, "--workers", "1"),
        fingerprint=("mlflow", "server", f"--port {port}"),
        probe=partial(probes.http_ok, f"{layout.mlflow_uri}/health"),
        timeout_s=180,
        data_dir=home,
        prepare=lambda: home.mkdir(parents=True, exist_ok=True),
        # The job runner (GenAI evaluation jobs) costs seven extra Python processes and
        # about 2 GB; the model registry and tracking do not need it.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        health=f"GET {layout.mlflow_uri}/health",
    )  # fmt: skip


def _prometheus(layout: Layout) -> Service:
    home = layout.run_dir / "prometheus"
    config = home / "prometheus.yml"
    return Service(
        name="prometheus",
        ports=(layout.prometheus_port,),
        argv=("prometheus", f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
              f"--web.listen-address=127.0.0.1:{layout.prometheus_port}",
              "--web.enable-lifecycle", "--storage.tsdb.retention.time=7d"),
        fingerprint=("prometheus", f"--config.file={config}"),
        probe=partial(probes.http_ok, f"{layout.prometheus_url}/-/ready"),
        timeout_s=60,
        data_dir=home,
        prepare=partial(write_local_config, layout, config),
        health=f"GET {layout.prometheus_url}/-/ready",
    )  # fmt: skip


def _redis_exporter(layout: Layout) -> Service:
    port = layout.redis_exporter_port
    address = f"127.0.0.1:{port}"
    return Service(
        name="redis-exporter",
        ports=(port,),
        argv=("prometheus-redis-exporter", f"-redis.addr={layout.redis_url}",
              f"-web.listen-address={address}", "-redis-only-metrics"),
        fingerprint=("prometheus-redis-exporter", address),
        probe=partial(probes.http_ok, f"http://{address}/metrics"),
        timeout_s=30,
        health=f"GET http://{address}/metrics",
    )  # fmt: skip


def infra_services(layout: Layout) -> list[Service]:
    return [
        _kafka(layout),
        _redis(layout),
        _redis_exporter(layout),
        _mlflow(layout),
        _prometheus(layout),
    ]


def app_service(layout: Layout, app: AppService) -> Service:
    args = app.arguments(layout.cards)
    url = f"http://127.0.0.1:{layout.app_ports[app.name]}{app.health_path}"
    return Service(
        name=app.name,
        ports=(layout.app_ports[app.name],),
        # Under a supervisor that starts it again when it exits non-zero, as a compose
        # restart policy would (launcher/supervise.py).
        argv=(sys.executable, "-m", "launcher.supervise", "--name", app.name, "--",
              sys.executable, "-m", app.package, *args),
        fingerprint=(f"-m {app.package}", *args[:1]),
        probe=partial(probes.http_ok, url),
        timeout_s=90,
        health=f"GET {url}",
        missing=missing_entry_point(app.package),
        needs_model=app.needs_model,
        secrets=app.secrets,
    )  # fmt: skip


def all_services(layout: Layout) -> list[Service]:
    """Infrastructure first, then (stack profile only) the apps, in start order."""
    services = infra_services(layout)
    if layout.profile == "stack":
        services += [app_service(layout, app) for app in APPS]
    return services
