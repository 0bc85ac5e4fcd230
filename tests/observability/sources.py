"""The observability files under test: rules, promtool tests, dashboards, provisioning."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARD_FILES = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
DATASOURCES_DIR = REPO / "grafana" / "provisioning" / "datasources"

# Grafana's built-in variables, replaced the way Grafana would for a short time range.
GRAFANA_VARIABLES = ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool not found: install Debian's prometheus (make install)"
    return path


def rules() -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for r in rules() if "record" in r]


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel}/{self.ref}"


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(board["uid"], panel["title"], target["refId"], target["expr"])
        for board in dashboards().values()
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, rate_interval: str) -> str:
    """The query Grafana would send: its interval variables replaced by a duration."""
    for variable in GRAFANA_VARIABLES:
        expr = expr.replace(variable, rate_interval)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


def provisioned_datasource_uids() -> set[str]:
    uids = set()
    for path in DATASOURCES_DIR.glob("*.yml"):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            if source.get("type") == "prometheus":
                uids.add(source["uid"])
    return uids


def normalized(expr: str) -> str:
    return " ".join(expr.split())


# Metric-like tokens: recorded series contain colons; label values and durations do not.
_RECORDED = re.compile(r"(?<![\w:\"])([a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]*[a-zA-Z0-9_])")
_JOB_MATCHER = re.compile(r'\bjob\s*(=~|!=|!~|=)\s*"([^"]*)"')


def recorded_names_in(expr: str) -> set[str]:
    return set(_RECORDED.findall(expr))


def job_matchers_in(expr: str) -> list[tuple[str, str]]:
    return _JOB_MATCHER.findall(expr)


def dashboard_builder() -> ModuleType:
    """grafana/build_dashboards.py, imported from its path (grafana/ is not a package)."""
    path = REPO / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
