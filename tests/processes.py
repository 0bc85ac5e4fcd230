"""Stopping the service processes tests start."""

from __future__ import annotations

import signal
import subprocess


def terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """SIGTERM, wait up to timeout_s, then SIGKILL. True if it stopped on SIGTERM (or had
    already exited)."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return False
