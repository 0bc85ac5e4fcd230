"""What the benchmark ran on and how busy it was: /proc readings (Linux only)."""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.deployment import StackAddresses

logger = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(meminfo()["MemTotal"] / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0])
    return out


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def _busy_total() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def busy_cpu_seconds() -> float:
    """CPU seconds all cores have spent busy since boot."""
    return _busy_total()[0] / CLOCK_TICKS


@dataclass
class Proc:
    """CPU time and memory of one process, from /proc/<pid>."""

    pid: int

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        # utime + stime + the same of reaped children: Redis's persistence forks
        # (append-only file rewrites) are part of what Redis costs.
        return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS

    def memory(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak) in bytes."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0]) * 1024
        return {"rss_bytes": out.get("VmRSS", 0), "peak_rss_bytes": out.get("VmHWM", 0)}


def pid_listening(port: int) -> int | None:
    """The process listening on a local TCP port (Kafka, Redis), if `ss` can tell."""
    try:
        text = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"pid=(\d+)", text)
    return int(match.group(1)) if match else None


def neighbour_procs(stack: StackAddresses) -> dict[str, Proc]:
    """Kafka's and Redis's processes, when they listen on this machine."""
    ports = {
        "kafka": urlsplit("//" + stack.kafka_bootstrap.split(",")[0]).port,
        "redis": urlsplit(stack.redis_url).port,
    }
    found = {}
    for name, port in ports.items():
        pid = pid_listening(port) if port else None
        if pid is not None:
            found[name] = Proc(pid)
    return found


class LoadMonitor:
    """Samples the 1-minute load average and machine CPU use in the background, so each
    measurement can report how busy the machine was while it ran."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self.samples: list[tuple[float, float, float]] = []  # (time, load1, cpu busy 0..1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        busy, total = _busy_total()
        while not self._stop.wait(self.every_s):
            now_busy, now_total = _busy_total()
            share = (now_busy - busy) / max(1, now_total - total)
            busy, total = now_busy, now_total
            self.samples.append((time.time(), loadavg()[0], share))

    def between(self, start: float, end: float) -> dict[str, float]:
        """Mean and max 1-minute load average and mean CPU busy share in [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end + self.every_s]
        if not inside:
            load = loadavg()[0]
            return {"load1_mean": load, "load1_max": load, "cpu_busy": float("nan")}
        loads = [s[1] for s in inside]
        return {
            "load1_mean": round(sum(loads) / len(loads), 2),
            "load1_max": round(max(loads), 2),
            "cpu_busy": round(sum(s[2] for s in inside) / len(inside), 3),
        }


def settle(below: float, max_wait_s: float) -> float:
    """Wait until the 1-minute load average is under `below` or `max_wait_s` has passed;
    returns the load average measurement starts at. `below` <= 0: no wait."""
    deadline = time.monotonic() + max_wait_s
    while below > 0 and loadavg()[0] >= below and time.monotonic() < deadline:
        logger.info("waiting for a quieter machine %s", f"load1={loadavg()[0]} below={below}")
        time.sleep(15)
    return loadavg()[0]
