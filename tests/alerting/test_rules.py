"""The routing config file: format, routing semantics, and errors that name the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alerting.rules import RulesError, load_rules, parse_rules
from alerting.settings import DEFAULT_RULES_FILE

ROUTED = {
    "sinks": {
        "log": {"type": "log"},
        "pager": {"type": "webhook", "url": "http://127.0.0.1:1/pager"},
        "chat": {"type": "slack", "url": "http://127.0.0.1:1/chat"},
    },
    "routes": [
        {"name": "critical", "severity": ["critical"], "sinks": ["pager", "log"], "continue": True},
        {"name": "very-sure", "min_score": 0.9, "sinks": ["chat"]},
        {"name": "rest", "sinks": ["log"]},
    ],
}


def test_the_shipped_rules_file_loads_and_logs_everything_of_the_last_day() -> None:
    rules = load_rules(DEFAULT_RULES_FILE, environ={})
    assert rules.route("low", 0.5) == ["log"]
    assert rules.route("critical", 0.99, age_s=86_000) == ["log"]
    assert rules.route("critical", 0.99, age_s=30 * 86_400) == []  # a backfill's


def test_a_route_too_young_for_an_alert_lets_the_next_route_match() -> None:
    rules = parse_rules(
        {
            "sinks": {"log": {"type": "log"}, "pager": {"type": "webhook", "url": "http://x/"}},
            "routes": [
                {"name": "fresh", "max_age_seconds": 3600, "sinks": ["pager"]},
                {"name": "rest", "sinks": ["log"]},
            ],
        },
        environ={},
    )
    assert rules.route("high", 0.9, age_s=60) == ["pager"]
    assert rules.route("high", 0.9, age_s=7200) == ["log"]


@pytest.mark.parametrize(
    ("severity", "score", "sinks"),
    [
        ("critical", 0.95, ["pager", "log", "chat"]),  # continue, then the next match
        ("critical", 0.85, ["pager", "log"]),  # continue, then "rest" adds log again: once
        ("high", 0.92, ["chat"]),  # first match wins
        ("high", 0.85, ["log"]),
    ],
)
def test_routes_first_match_wins_unless_continue(
    severity: str, score: float, sinks: list[str]
) -> None:
    assert parse_rules(ROUTED, environ={}).route(severity, score) == sinks


def test_toml_and_yaml_say_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "rules.toml"
    toml.write_text(
        '[suppression]\nwindow_seconds = 60\n[sinks.hook]\ntype = "webhook"\n'
        'url = "${HOOK_URL}"\nheaders = { Authorization = "Bearer ${HOOK_TOKEN}" }\n'
        '[[routes]]\nname = "all"\nsinks = ["hook"]\n'
    )
    yaml = tmp_path / "rules.yaml"
    yaml.write_text(
        "suppression: {window_seconds: 60}\n"
        "sinks:\n  hook: {type: webhook, url: '${HOOK_URL}',"
        " headers: {Authorization: 'Bearer ${HOOK_TOKEN}'}}\n"
        "routes:\n  - {name: all, sinks: [hook]}\n"
    )
    env = {"HOOK_URL": "https://hooks.example.test/x", "HOOK_TOKEN": "t0k"}
    from_toml, from_yaml = load_rules(toml, env), load_rules(yaml, env)
    assert from_toml == from_yaml
    hook = from_toml.sinks["hook"]
    assert hook.type == "webhook" and hook.url == env["HOOK_URL"]
    assert hook.headers == {"Authorization": "Bearer t0k"}
    assert from_toml.suppression.window_seconds == 60


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"routes": [{"name": "x", "sinks": ["nowhere"]}]},
            "routes.0.sinks: unknown sink 'nowhere'",
        ),
        ({"sinks": {"log": {"type": "webhook", "url": "ftp://x"}}}, "sinks.log.webhook.url"),
        ({"sinks": {"log": {"type": "carrier-pigeon"}}}, "sinks.log"),
        ({"routes": [{"name": "x", "sevrity": ["high"], "sinks": ["log"]}]}, "routes.0.sevrity"),
        ({"routes": [{"name": "x", "min_score": 2, "sinks": ["log"]}]}, "routes.0.min_score"),
        ({"delivery": {"max_attempts": 0}}, "delivery.max_attempts"),
        (
            {"sinks": {"log": {"type": "slack", "url": "${NOT_SET_ANYWHERE}"}}},
            "sinks.log.url: environment variable NOT_SET_ANYWHERE is not set",
        ),
    ],
)
def test_mistakes_name_the_field(change: dict[str, object], message: str) -> None:
    config = {"sinks": {"log": {"type": "log"}}, "routes": [{"name": "r", "sinks": ["log"]}]}
    with pytest.raises(RulesError, match=re.escape(message)):
        parse_rules({**config, **change}, environ={})


def test_unreadable_or_unparseable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[sinks.log\n")
    with pytest.raises(RulesError, match="does not parse"):
        load_rules(broken)
