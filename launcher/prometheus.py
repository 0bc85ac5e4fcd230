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
    ports: dict[str, tuple[int, ...]] = {
        **{name: (port,) for name, port in layout.app_ports.items()},
        "prometheus": (layout.prometheus_port,),
        # Every broker's agent: one target per node of a cluster.
        "kafka": tuple(node.metrics_port for node in layout.brokers),
        "redis-exporter": (layout.redis_exporter_port,),
    }
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            static["targets"] = [
                local for t in static.get("targets", []) for local in _localize(t, ports)
            ]
        # A name compose resolves to every node (the brokers) becomes those nodes' ports.
        discovered = [
            f"{name}:{dns['port']}"
            for dns in job.pop("dns_sd_configs", [])
            for name in dns["names"]
        ]
        if discovered:
            targets = [local for t in discovered for local in _localize(t, ports)]
            job.setdefault("static_configs", []).append({"targets": targets})
    return config


def _localize(target: str, ports: dict[str, tuple[int, ...]]) -> list[str]:
    host, _, port = target.rpartition(":")
    return [f"localhost:{p}" for p in ports.get(host, (int(port),))]


def write_local_config(layout: Layout, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Rendered by the launcher from {SOURCE.relative_to(REPO_ROOT)}; edit that file.\n"
    path.write_text(header + yaml.safe_dump(local_config(layout), sort_keys=False))
