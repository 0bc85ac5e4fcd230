"""promtool on the committed Prometheus files: config (as committed and as the launcher
renders it), rule syntax, and the rule unit tests of prometheus/tests/."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from launcher.layout import Profile, layout_for
from launcher.prometheus import SOURCE, write_local_config
from tests.observability.sources import (
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    alert_rules,
    dashboards,
    job_matchers_in,
    normalized,
    panel_queries,
    promtool,
    recorded_names_in,
    recording_rules,
    rules,
)


def run_promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_rule_files_exist_and_are_loaded_by_the_config() -> None:
    assert RULE_FILES, "no rule files in prometheus/rules/"
    patterns = yaml.safe_load(SOURCE.read_text()).get("rule_files") or []
    loaded = {p for pattern in patterns for p in SOURCE.parent.glob(pattern)}
    assert set(RULE_FILES) <= loaded, f"prometheus.yml rule_files {patterns} miss some rules"


def test_committed_config_is_valid() -> None:
    output = run_promtool("check", "config", str(SOURCE))
    assert f"{len(RULE_FILES)} rule files found" in output


@pytest.mark.parametrize("profile", ["stack", "test"])
def test_rendered_config_is_valid(tmp_path: Path, profile: Profile) -> None:
    rendered = tmp_path / "prometheus.yml"
    write_local_config(layout_for(profile), rendered)
    # From another directory: the rendered rule paths must not depend on the cwd.
    output = run_promtool("check", "config", str(rendered), cwd=tmp_path)
    assert f"{len(RULE_FILES)} rule files found" in output


def test_rules_are_valid() -> None:
    run_promtool("check", "rules", *map(str, RULE_FILES))


def test_rule_unit_tests_pass() -> None:
    assert RULE_TEST_FILES, "no promtool tests in prometheus/tests/"
    run_promtool("test", "rules", *map(str, RULE_TEST_FILES))


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_alerts_have_severity_summary_and_description() -> None:
    for rule in alert_rules():
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_rule_names_are_unique() -> None:
    alerts = [rule["alert"] for rule in alert_rules()]
    assert len(alerts) == len(set(alerts))
    # A recorded name may repeat only with distinguishing labels (the quantiles).
    recorded = [
        (rule["record"], tuple(sorted((rule.get("labels") or {}).items())))
        for rule in recording_rules()
    ]
    assert len(recorded) == len(set(recorded))


def test_every_recorded_series_used_is_recorded() -> None:
    recorded = {rule["record"] for rule in recording_rules()}
    used = {name for rule in rules() for name in recorded_names_in(rule["expr"])}
    used |= {name for query in panel_queries() for name in recorded_names_in(query.expr)}
    assert used - recorded == set(), "expressions use series no rule records"
    assert recorded - used == set(), "recorded series nothing uses"


def test_job_names_match_the_scrape_config() -> None:
    jobs = {job["job_name"] for job in yaml.safe_load(SOURCE.read_text())["scrape_configs"]}
    exprs = [rule["expr"] for rule in rules()] + [q.expr for q in panel_queries()]
    exprs += [
        a["expr"]
        for board in dashboards().values()
        for a in board["annotations"]["list"]
        if "expr" in a
    ]
    seen = set()
    for expr in exprs:
        for op, value in job_matchers_in(normalized(expr)):
            if op in ("=", "!="):
                assert value in jobs, f"job {value!r} is not a scrape job of {SOURCE.name}"
                seen.add(value)
    assert "scorer" in seen


def test_dashboards_doc_lists_every_alert() -> None:
    doc = (PROMETHEUS_DIR / "DASHBOARDS.md").read_text()
    for rule in alert_rules():
        row = f"| {rule['alert']} | {rule['labels']['severity']} |"
        assert row in doc, f"DASHBOARDS.md misses {row}"
