"""The Prometheus config the launcher renders from prometheus/prometheus.yml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.apps import APPS
from launcher.layout import Profile, layout_for
from launcher.prometheus import SOURCE, local_config, write_local_config


def targets(config: dict[str, Any]) -> dict[str, list[str]]:
    """Each job's targets, a discovered name as host:port."""
    return {
        job["job_name"]: [t for static in job.get("static_configs", []) for t in static["targets"]]
        + [f"{n}:{dns['port']}" for dns in job.get("dns_sd_configs", []) for n in dns["names"]]
        for job in config["scrape_configs"]
    }


@pytest.mark.parametrize("profile", ["stack", "test", "cluster"])
def test_rendered_config_targets_every_service_on_localhost(
    tmp_path: Path, profile: Profile
) -> None:
    layout = layout_for(profile)
    path = tmp_path / "prometheus.yml"
    write_local_config(layout, path)
    rendered = targets(yaml.safe_load(path.read_text()))

    expected = {app.name: [f"localhost:{layout.app_ports[app.name]}"] for app in APPS}
    expected["prometheus"] = [f"localhost:{layout.prometheus_port}"]
    # One target per broker: the cluster profile's three agents.
    expected["kafka"] = [f"localhost:{node.metrics_port}" for node in layout.brokers]
    expected["redis-exporter"] = [f"localhost:{layout.redis_exporter_port}"]
    assert rendered == expected

    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: run make install"
    check = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_committed_config_uses_compose_service_names() -> None:
    committed = targets(yaml.safe_load(SOURCE.read_text()))
    for job, job_targets in committed.items():
        assert all(t.rsplit(":", 1)[0] == job for t in job_targets), (job, job_targets)


def test_relative_rule_files_become_absolute(tmp_path: Path) -> None:
    source = tmp_path / "prometheus.yml"
    source.write_text('rule_files: ["rules/*.yml"]\nscrape_configs: []\n')
    config = local_config(layout_for("test"), source)
    assert config["rule_files"] == [str(tmp_path / "rules" / "*.yml")]
