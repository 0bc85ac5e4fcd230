"""launcher.supervise: failed runs are started again, a clean exit or a stop ends it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _supervise(*command: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "launcher.supervise", "--name", "demo", "--backoff-s", "0.05",
         "--", *command],
        cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_restarts_until_the_command_succeeds(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # Fails twice (exit 5, then 3), then exits 0.
    script = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = len(p.read_text()) "
        "if p.exists() else 0; p.write_text('x' * (n + 1)); sys.exit([5, 3, 0][n])"
    )
    log = tmp_path / "log"
    proc = _supervise(sys.executable, "-c", script, str(runs), log=log)
    assert proc.wait(30) == 0
    assert runs.read_text() == "xxx"
    text = log.read_text()
    assert text.count("logger=launcher.supervise started") == 3
    assert "failed, restarting service=demo code=5" in text
    assert "failed, restarting service=demo code=3" in text


def test_sigterm_stops_the_child_and_restarts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "got-sigterm"
    script = (
        "import pathlib, signal, sys, time\n"
        "def bye(*_): pathlib.Path(sys.argv[1]).write_text('yes'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "log"
    proc = _supervise(sys.executable, "-c", script, str(marker), log=log)
    deadline = time.monotonic() + 30
    while "up" not in log.read_text().splitlines() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # the supervisor alone: it passes the signal on
    assert proc.wait(30) == 0
    assert marker.read_text() == "yes"
    assert log.read_text().count("logger=launcher.supervise started") == 1
