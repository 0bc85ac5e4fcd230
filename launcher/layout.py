"""Profiles: which ports and which run folder a launched stack uses.

`stack` is the development stack of `make up` (ports from .env, data kept across runs);
`test` is the stack the pytest fixtures start (the TEST_* ports, data wiped at each up);
`cluster` is three Kafka brokers and a six-node Redis Cluster (the CLUSTER_* ports, data
kept in .run/cluster) with the apps the cluster can serve yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from fraudcore.settings import REPO_ROOT, TopicSettings, load_settings
from launcher.apps import APPS, WORLD_CARDS

Profile = Literal["stack", "test", "cluster"]
RUN_ROOT = REPO_ROOT / ".run"
CACHE_DIR = REPO_ROOT / ".cache"


class LauncherSettings(TopicSettings):
    kafka_bootstrap_servers: str
    kafka_controller_port: int
    kafka_metrics_port: int
    redis_url: str
    mlflow_port: int
    prometheus_port: int
    redis_exporter_port: int
    transactions_partitions: int
    producer_metrics_port: int
    scorer_http_port: int
    alerting_http_port: int
    trainer_metrics_port: int
    test_kafka_port: int
    test_kafka_controller_port: int
    test_kafka_metrics_port: int
    test_redis_port: int
    test_mlflow_port: int
    test_prometheus_port: int
    test_redis_exporter_port: int
    cluster_kafka_bootstrap_servers: str
    cluster_kafka_controller_ports: str
    cluster_kafka_metrics_ports: str
    cluster_redis_url: str
    cluster_mlflow_port: int
    cluster_prometheus_port: int
    cluster_redis_exporter_port: int
    cluster_producer_metrics_port: int
    cluster_scorer_http_port: int
    cluster_alerting_http_port: int
    cluster_trainer_metrics_port: int


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node, broker and controller in one JVM."""

    node_id: int
    port: int
    controller_port: int
    # Its JMX exporter agent: /metrics for Prometheus.
    metrics_port: int

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class Layout:
    """Where one launched stack lives and listens."""

    profile: str
    run_dir: Path
    kafka_port: int
    kafka_controller_port: int
    # The broker's JMX exporter agent: /metrics for Prometheus.
    kafka_metrics_port: int
    redis_port: int
    mlflow_port: int
    prometheus_port: int
    redis_exporter_port: int
    # Wipe a service's data before starting it (the test profile starts from nothing).
    fresh: bool = False
    transactions_partitions: int = 1
    # Ports of the application services by package name (health checks, scrape targets).
    app_ports: dict[str, int] = field(default_factory=dict)
    # Names of the stack topics created once Kafka is up; None: create none.
    topics: TopicSettings | None = None
    # Cards of the simulated world the producer runs (launcher.apps.world).
    cards: int = WORLD_CARDS
    # A Kafka cluster of these nodes instead of the single node of kafka_port (the
    # cluster profile); the first node's ports are then kafka_port and the others.
    kafka_nodes: tuple[KafkaNode, ...] = ()
    # A Redis Cluster of these nodes instead of the single Redis of redis_port.
    redis_cluster_ports: tuple[int, ...] = ()
    # Variables the apps and the model bootstrap get on top of .env (a profile whose
    # addresses are not .env's own: the cluster's bootstrap list and Redis Cluster URL).
    app_env: dict[str, str] = field(default_factory=dict)

    @property
    def brokers(self) -> tuple[KafkaNode, ...]:
        """Every Kafka node: the single node is a cluster of one."""
        if self.kafka_nodes:
            return self.kafka_nodes
        return (KafkaNode(1, self.kafka_port, self.kafka_controller_port, self.kafka_metrics_port),)

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.brokers)

    @property
    def kafka_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.kafka_metrics_port}/metrics"

    @property
    def redis_url(self) -> str:
        return f"redis://localhost:{self.redis_port}/0"

    @property
    def redis_cluster_url(self) -> str:
        """The Redis Cluster's seed nodes, as REDIS_URL for the apps of this profile."""
        return "redis+cluster://" + ",".join(f"localhost:{p}" for p in self.redis_cluster_ports)

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"


def _port_of(address: str, what: str) -> int:
    port = urlsplit(address if "//" in address else f"//{address}").port
    if port is None:
        raise ValueError(f"{what}: no port in {address!r}")
    return port


def _ports(addresses: str, what: str) -> tuple[int, ...]:
    """Ports of a comma-separated list: host:port items, bare ports, or a URL whose
    netloc is such a list (redis+cluster://localhost:1,localhost:2)."""
    netloc = addresses.split("://", 1)[-1].split("/", 1)[0]
    return tuple(_port_of(item.strip(), what) if ":" in item else int(item)
                 for item in netloc.split(",") if item.strip())  # fmt: skip


# The cluster profile's scorer waits for this many replicas of each Redis master to hold
# a batch's state before the batch's Kafka commit (scorer/routed_features.py).
CLUSTER_REPLICA_ACKS = 1


def cluster_layout(s: LauncherSettings) -> Layout:
    """The cluster profile: every node's ports from the CLUSTER_* settings; the apps get
    the bootstrap list and the Redis Cluster address, nothing else changes for them."""
    ports = _ports(s.cluster_kafka_bootstrap_servers, "CLUSTER_KAFKA_BOOTSTRAP_SERVERS")
    controllers = _ports(s.cluster_kafka_controller_ports, "CLUSTER_KAFKA_CONTROLLER_PORTS")
    metrics = _ports(s.cluster_kafka_metrics_ports, "CLUSTER_KAFKA_METRICS_PORTS")
    if not len(ports) == len(controllers) == len(metrics):
        raise ValueError("CLUSTER_KAFKA_*: one broker, controller and metrics port per node")
    nodes = tuple(
        KafkaNode(i, *node)
        for i, node in enumerate(zip(ports, controllers, metrics, strict=True), 1)
    )
    redis_ports = _ports(s.cluster_redis_url, "CLUSTER_REDIS_URL")
    run_dir = RUN_ROOT / "cluster"
    app_ports = {app.name: getattr(s, f"cluster_{app.port_setting}") for app in APPS}
    layout = Layout(
        profile="cluster",
        run_dir=run_dir,
        kafka_port=nodes[0].port,
        kafka_controller_port=nodes[0].controller_port,
        kafka_metrics_port=nodes[0].metrics_port,
        redis_port=redis_ports[0],
        mlflow_port=s.cluster_mlflow_port,
        prometheus_port=s.cluster_prometheus_port,
        redis_exporter_port=s.cluster_redis_exporter_port,
        transactions_partitions=s.transactions_partitions,
        app_ports=app_ports,
        topics=s,
        kafka_nodes=nodes,
        redis_cluster_ports=redis_ports,
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": layout.kafka_bootstrap,
        "REDIS_URL": layout.redis_cluster_url,
        "SCORER_REDIS_REPLICA_ACKS": str(CLUSTER_REPLICA_ACKS),
        "MLFLOW_TRACKING_URI": layout.mlflow_uri,
        "ALERTS_DATABASE_URL": f"sqlite:///{run_dir / 'alerts.db'}",
        **{app.port_setting.upper(): str(app_ports[app.name]) for app in APPS},
    }
    return replace(layout, app_env=env)


def layout_for(profile: Profile, settings: LauncherSettings | None = None) -> Layout:
    s = settings or load_settings(LauncherSettings)
    if profile == "cluster":
        return cluster_layout(s)
    app_ports = {app.name: getattr(s, app.port_setting) for app in APPS}
    if profile == "test":
        kafka, controller = s.test_kafka_port, s.test_kafka_controller_port
        kafka_metrics = s.test_kafka_metrics_port
        redis, mlflow, prometheus = s.test_redis_port, s.test_mlflow_port, s.test_prometheus_port
        exporter = s.test_redis_exporter_port
    else:
        first_broker = s.kafka_bootstrap_servers.split(",")[0]
        kafka = _port_of(first_broker, "KAFKA_BOOTSTRAP_SERVERS")
        controller = s.kafka_controller_port
        kafka_metrics = s.kafka_metrics_port
        redis, mlflow = _port_of(s.redis_url, "REDIS_URL"), s.mlflow_port
        prometheus = s.prometheus_port
        exporter = s.redis_exporter_port
    return Layout(
        profile=profile,
        run_dir=RUN_ROOT / profile,
        kafka_port=kafka,
        kafka_controller_port=controller,
        kafka_metrics_port=kafka_metrics,
        redis_port=redis,
        mlflow_port=mlflow,
        prometheus_port=prometheus,
        redis_exporter_port=exporter,
        fresh=profile == "test",
        transactions_partitions=s.transactions_partitions,
        app_ports=app_ports,
        topics=s,
    )
