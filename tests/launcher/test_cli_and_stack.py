"""The session's test stack answers, whichever way it was provided, and the CLI runs."""

from __future__ import annotations

import subprocess
import sys

from launcher import probes
from tests.stack import TestStack


def test_session_stack_services_answer(stack: TestStack) -> None:
    assert probes.kafka_ok(stack.kafka_bootstrap), stack
    assert probes.redis_ok(stack.redis_url), stack
    assert probes.http_ok(f"{stack.mlflow_uri}/health"), stack
    if stack.source == "launcher":
        assert stack.prometheus_url is not None
        assert probes.http_ok(f"{stack.prometheus_url}/-/ready"), stack
    if stack.source != "external":
        assert stack.kafka_metrics is not None
    if stack.kafka_metrics is not None:
        assert probes.http_ok(f"http://{stack.kafka_metrics}/metrics"), stack


def test_cli_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("up", "down", "status", "logs"):
        assert f" {command} " in result.stdout
