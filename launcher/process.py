"""Processes the launcher owns: pid files, spawning, liveness, stopping, port checks.

A pid file records the pid, the process start time (from /proc, so a reused pid is never
mistaken for ours) and a fingerprint: strings its command line must contain. Only a
process matching all three is treated as ours, and only ours is ever signalled.
Linux only (reads /proc).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fraudcore.logs import kv

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int
    fingerprint: tuple[str, ...]
    argv: tuple[str, ...]


@dataclass(frozen=True)
class _Stat:
    state: str
    pgrp: int
    start_ticks: int


def _stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return _Stat(state=rest[0], pgrp=int(rest[2]), start_ticks=int(rest[19]))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _running(pid: int) -> _Stat | None:
    _reap(pid)
    stat = _stat(pid)
    if stat is None or stat.state == "X":
        return None
    if stat.state == "Z" and not _threads_left(pid):
        return None
    return stat


def _threads_left(pid: int) -> bool:
    """A process whose main thread has exited shows as a zombie while its other threads
    still finish (a JVM's shutdown hooks), and they still hold its sockets: it is gone
    only once every thread is."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    for task in tasks:
        try:
            raw = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
            return True
    return False


def alive(record: PidRecord) -> bool:
    """The process of `record` still runs (its pid was not reused)."""
    stat = _running(record.pid)
    return stat is not None and stat.start_ticks == record.start_ticks


def is_ours(record: PidRecord) -> bool:
    """Alive and its command line carries the fingerprint. Right after spawn() the
    command line may still be the launcher's own (before exec): use alive() then."""
    if not alive(record):
        return False
    command = cmdline(record.pid)
    return all(token in command for token in record.fingerprint)


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            fingerprint=tuple(data["fingerprint"]),
            argv=tuple(data["argv"]),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable pid file, treating it as stale %s", kv(path=path))
        return None


def write_pid_file(path: Path, record: PidRecord) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


def spawn(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    fingerprint: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    truncate_log: bool = False,
) -> PidRecord:
    """Start `argv` detached (own session, so it outlives the launcher and its process
    group can be stopped as a whole) and write its pid file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w" if truncate_log else "a") as log:
        log.write(f"--- launcher: starting {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    stat = _stat(proc.pid)
    # The start time is fixed at fork, so reading it before exec completes is fine.
    record = PidRecord(proc.pid, stat.start_ticks if stat else -1, tuple(fingerprint), tuple(argv))
    write_pid_file(pid_file, record)
    return record


def _group_alive(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _running(int(entry.name))
            if stat is not None and stat.pgrp == pgid:
                return True
    return False


def _wait(gone: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not gone():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop(record: PidRecord, name: str) -> bool:
    """SIGTERM, a bounded wait, then SIGKILL. Returns False, having signalled nothing,
    when the pid is no longer the process we started."""
    return stop_together([(record, name)])[0]


def stop_together(processes: Sequence[tuple[PidRecord, str]]) -> list[bool]:
    """stop() for several processes at once: all get SIGTERM before any is waited for
    (the nodes of a Kafka cluster: stopped one by one, the last loses its controller
    quorum and cannot finish its controlled shutdown). One answer per process."""
    targets: list[_Target | None] = []
    for record, name in processes:
        stat = _running(record.pid)
        if stat is None or not is_ours(record):
            targets.append(None)
            continue
        # We started it as a session leader, so its group holds its children too
        # (MLflow's uvicorn workers). Should it have left that group, signal it alone.
        targets.append(_Target(record.pid, name, group=stat.pgrp == record.pid))
    live = [t for t in targets if t is not None]
    started = time.monotonic()
    for target in live:
        target.send(signal.SIGTERM)
    deadline = started + STOP_TIMEOUT_S
    for target in live:
        if not _wait(target.gone, max(0.0, deadline - time.monotonic())):
            logger.warning(
                "no exit after SIGTERM, sending SIGKILL %s", kv(service=target.name, pid=target.pid)
            )
            target.send(signal.SIGKILL)
            if not _wait(target.gone, KILL_TIMEOUT_S):
                raise RuntimeError(f"{target.name} (pid {target.pid}) survived SIGKILL")
        logger.info(
            "stopped %s",
            kv(service=target.name, pid=target.pid, after_s=f"{time.monotonic() - started:.1f}"),
        )
    return [t is not None for t in targets]


@dataclass(frozen=True)
class _Target:
    pid: int
    name: str
    group: bool

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            (os.killpg if self.group else os.kill)(self.pid, sig)

    def gone(self) -> bool:
        return not _group_alive(self.pid) if self.group else _running(self.pid) is None


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT is free to use; only a listener blocks.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def who_listens(port: int) -> str:
    """Best effort description of the process listening on `port` (needs `ss`)."""
    try:
        out = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown process"
    users = [line.split("users:", 1)[1] for line in out.splitlines() if "users:" in line]
    return users[0] if users else "unknown process"
