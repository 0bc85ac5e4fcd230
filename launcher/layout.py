"""Profiles: which ports and which run folder a launched stack uses.

`stack` is the development stack of `make up` (ports from .env, data kept across runs);
`test` is the stack the pytest fixtures start (the TEST_* ports, data wiped at each up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from fraudcore.settings import REPO_ROOT, TopicSettings, load_settings
from launcher.apps import APPS, WORLD_CARDS

Profile = Literal["stack", "test"]
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

    @property
    def kafka_bootstrap(self) -> str:
        return f"localhost:{self.kafka_port}"

    @property
    def kafka_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.kafka_metrics_port}/metrics"

    @property
    def redis_url(self) -> str:
        return f"redis://localhost:{self.redis_port}/0"

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


def layout_for(profile: Profile, settings: LauncherSettings | None = None) -> Layout:
    s = settings or load_settings(LauncherSettings)
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
