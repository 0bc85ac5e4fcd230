"""What each launched service is: command, ports, health probe, data, preparation."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from launcher import kafka, probes, redis_cluster
from launcher.apps import APPS, AppService, missing_entry_point
from launcher.layout import KafkaNode, Layout
from launcher.prometheus import write_local_config
from launcher.topics import ensure_stack_topics

logger = logging.getLogger(__name__)

# The infrastructure of the single-node profiles (stack, test).
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
    # Infrastructure: started, and healthy, before any app.
    infra: bool = False
    # Its part in a cluster, for status ("master (5461 slots)"); None: not in one.
    role: Callable[[], str] | None = None
    # Services of one group are stopped together (a cluster's nodes); "" = alone.
    stop_group: str = ""


def _kafka_nodes(layout: Layout) -> list[Service]:
    """The single node ("kafka") or each node of the cluster ("kafka-1", ...). The stack
    topics are created once the last node is healthy: nodes are waited for in order, so
    every node has registered by then and a topic can have a copy on each."""
    nodes = layout.brokers
    cluster = len(nodes) > 1
    libs = kafka.libs_dir()
    voters = kafka.quorum_voters({n.node_id: n.controller_port for n in nodes})
    cluster_id_file = layout.run_dir / "kafka-cluster.id"

    def create_topics() -> None:
        if layout.topics is not None:
            ensure_stack_topics(
                layout.kafka_bootstrap, layout.topics, layout.transactions_partitions, len(nodes)
            )

    def node(n: KafkaNode, last: bool) -> Service:
        name = f"kafka-{n.node_id}" if cluster else "kafka"
        home = layout.run_dir / name
        config, data = home / "server.properties", home / "data"
        agent = kafka.jmx_agent_option(kafka.jmx_agent_jar(), n.metrics_port)

        def prepare() -> None:
            kafka.fetch_jars()
            kafka.fetch_jmx_agent()
            properties = kafka.broker_properties(
                n.port, n.controller_port, node_id=n.node_id, voters=voters, replicas=len(nodes)
            )
            kafka.write_server_properties(config, {**properties, "log.dirs": str(data)})
            shared = kafka.shared_cluster_id(cluster_id_file) if cluster else None
            kafka.format_storage(libs, config, data, shared)

        def healthy() -> bool:
            # Its metrics too: without them the broker panels are empty and
            # KafkaNoActiveController fires.
            return probes.kafka_ok(n.bootstrap, n.node_id if cluster else None) and (
                probes.http_ok(n.metrics_url)
            )

        def role() -> str:
            active = probes.metric_value(
                n.metrics_url, "kafka_controller_kafkacontroller_activecontrollercount"
            )
            # The quorum's leader is the active controller.
            return "broker+controller" + (", active" if active == 1 else "")

        return Service(
            name=name,
            ports=(n.port, n.controller_port, n.metrics_port),
            argv=tuple(kafka.broker_argv(libs, config, agent)),
            fingerprint=("kafka.Kafka", str(config)),
            probe=healthy,
            # Three JVMs starting side by side on two cores take longer than one.
            timeout_s=180 if cluster else 120,
            data_dir=home,
            prepare=prepare,
            on_healthy=create_topics if last else None,
            health=f"kafka node {n.node_id} in metadata at {n.bootstrap}, GET {n.metrics_url}",
            infra=True,
            role=role if cluster else None,
            stop_group="kafka" if cluster else "",
        )

    return [node(n, i == len(nodes) - 1) for i, n in enumerate(nodes)]


def _redis_argv(port: int, data: Path, *options: str) -> tuple[str, ...]:
    """redis-server as the stack runs it, alone or as a cluster node (`options`).

    "-::1": also listen on IPv6 loopback when the host has it, so `localhost` works
    whichever address it resolves to first. The append-only file is the persistence;
    RDB snapshots on top of it (Redis's default `save` rules) forked the server every
    minute under the scorer's write rate, for a second copy that a restart does not even
    read. The file is rewritten when it has grown 9x rather than 2x: the scorer rewrites
    every user it sees, and at 5,000 tx/s the default forked a rewrite every ~10 s (Redis
    CPU 0.35-0.37 -> 0.27-0.31 of a core, two A/B pairs); the price is a larger file
    between rewrites."""
    return ("redis-server", "--port", str(port), "--bind", "127.0.0.1", "-::1",
            "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--auto-aof-rewrite-percentage", "800",
            "--daemonize", "no", "--protected-mode", "no", *options)  # fmt: skip


def _redis_service(name: str, port: int, data: Path, *options: str) -> Service:
    url = f"redis://localhost:{port}/0"
    return Service(
        name=name,
        ports=(port,),
        argv=_redis_argv(port, data, *options),
        # Redis rewrites its process title to "redis-server <addr>:<port>".
        fingerprint=("redis-server", f":{port}"),
        probe=partial(probes.redis_ok, url),
        timeout_s=30,
        data_dir=data,
        prepare=lambda: data.mkdir(parents=True, exist_ok=True),
        health=f"PING {url}",
        infra=True,
    )


def _redis(layout: Layout) -> list[Service]:
    """The single Redis, or each node of the Redis Cluster ("redis-1", ...): the cluster
    is formed (or found formed) once the last node answers."""
    ports = layout.redis_cluster_ports
    if not ports:
        return [_redis_service("redis", layout.redis_port, layout.run_dir / "redis")]
    nodes = []
    for i, port in enumerate(ports, 1):
        service = _redis_service(
            f"redis-{i}", port, layout.run_dir / f"redis-{i}", *redis_cluster.NODE_OPTIONS
        )
        # Stopped together too: one by one, each stopped master's replica would take
        # over its slots first (a failover a node timeout later, for nothing).
        nodes.append(replace(service, role=partial(redis_cluster.role, port), stop_group="redis"))
    nodes[-1] = replace(nodes[-1], on_healthy=partial(redis_cluster.ensure_cluster, ports))
    # The cluster's own bus port (client port + 10000) must be free too.
    return [replace(n, ports=(*n.ports, n.ports[0] + 10000)) for n in nodes]


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
        infra=True,
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
        infra=True,
    )  # fmt: skip


def _redis_exporter(layout: Layout) -> Service:
    port = layout.redis_exporter_port
    address = f"127.0.0.1:{port}"
    return Service(
        name="redis-exporter",
        ports=(port,),
        # A cluster's first node: its operations, latency and memory stand for the rest
        # until the dashboards learn several nodes.
        argv=("prometheus-redis-exporter", f"-redis.addr={layout.redis_url}",
              f"-web.listen-address={address}", "-redis-only-metrics"),
        fingerprint=("prometheus-redis-exporter", address),
        probe=partial(probes.http_ok, f"http://{address}/metrics"),
        timeout_s=30,
        health=f"GET http://{address}/metrics",
        infra=True,
    )  # fmt: skip


def infra_services(layout: Layout) -> list[Service]:
    return [
        *_kafka_nodes(layout),
        *_redis(layout),
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
        env=layout.app_env,
        health=f"GET {url}",
        missing=missing_entry_point(app.package),
        needs_model=app.needs_model,
        secrets=app.secrets,
    )  # fmt: skip


def all_services(layout: Layout) -> list[Service]:
    """Infrastructure first, then (stack and cluster profiles) the apps, in start order."""
    services = infra_services(layout)
    if layout.profile in ("stack", "cluster"):
        services += [app_service(layout, app) for app in APPS]
    return services
