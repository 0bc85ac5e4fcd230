"""Render prometheus/prometheus.yml (compose host names) for a local run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fraudcore.settings import REPO_ROOT
from launcher.layout import Layout

SOURCE = REPO_ROOT / "prometheus" / "prometheus.yml"


def local_config(layout: Layout, source: Path = SOURCE) -> dict[str, Any]:
    """The committed config with every target pointing at localhost. A target named
    after a service the launcher knows gets that service's port for this layout. Rule
    files, relative to the config in compose, become absolute (the rendered copy lives
    in the run folder)."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    if config.get("rule_files"):
        config["rule_files"] = [str(source.parent / pattern) for pattern in config["rule_files"]]
    ports = {
        **layout.app_ports,
        "prometheus": layout.prometheus_port,
        "kafka": layout.kafka_metrics_port,
        "redis-exporter": layout.redis_exporter_port,
    }
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            static["targets"] = [_localize(t, ports) for t in static.get("targets", [])]
    return config


def _localize(target: str, ports: dict[str, int]) -> str:
    host, _, port = target.rpartition(":")
    return f"localhost:{ports.get(host, port)}"


def write_local_config(layout: Layout, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Rendered by the launcher from {SOURCE.relative_to(REPO_ROOT)}; edit that file.\n"
    path.write_text(header + yaml.safe_dump(local_config(layout), sort_keys=False))
