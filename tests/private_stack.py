"""Services of a test's own, for fault tests that stop, restart or kill them.

The shared test stack (tests/stack.py) must stay up for every other test, so a test that
restarts a broker or kills Redis gets its own: the launcher's own service definitions,
on free ports, in a folder of the test's. Its data survives a restart, as a real
deployment's would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher import process
from launcher.layout import Layout
from launcher.runner import Launcher
from launcher.services import infra_services
from tests.stack import free_port

KILL_WAIT_S = 10.0


@dataclass
class PrivateStack:
    launcher: Launcher

    @property
    def layout(self) -> Layout:
        return self.launcher.layout

    def start(self, name: str) -> None:
        self.launcher.up([name])

    def stop(self, name: str) -> None:
        """What `python -m launcher down --services <name>` does: SIGTERM, bounded wait."""
        self.launcher.down([name])

    def kill(self, name: str) -> None:
        """kill -9, as a crash would; the pid file stays, as a crash leaves it."""
        record = process.read_pid_file(self.launcher.pid_file(name))
        assert record is not None and process.is_ours(record), f"{name} is not running"
        os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while process.alive(record):  # gone before a start() could find it still running
            assert time.monotonic() < deadline, f"{name} survived SIGKILL"
            time.sleep(0.05)

    def pid(self, name: str) -> int:
        record = process.read_pid_file(self.launcher.pid_file(name))
        assert record is not None, f"{name} has no pid file"
        return record.pid

    def log(self, name: str) -> Path:
        return self.launcher.log_file(name)


def free_layout(profile: str, run_dir: Path) -> Layout:
    """A launcher layout whose every port is one nothing listens on now."""
    return Layout(
        profile=profile,
        run_dir=run_dir,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_metrics_port=free_port(),
        redis_port=free_port(),
        mlflow_port=free_port(),
        prometheus_port=free_port(),
        redis_exporter_port=free_port(),
    )


@contextmanager
def private_stack(run_dir: Path, names: Sequence[str]) -> Iterator[PrivateStack]:
    """Start `names` (of kafka, redis, mlflow) on free ports under `run_dir`; stop them
    all at the end, whatever state the test left them in."""
    layout = free_layout("private", run_dir)
    launcher = Launcher(layout, [s for s in infra_services(layout) if s.name in names])
    try:
        launcher.up(list(names))
        yield PrivateStack(launcher)
    finally:
        launcher.down()
