"""The launcher's process mechanics, on a Redis of its own (free port, temporary run
folder), so the session's test stack is never touched."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from launcher import process
from launcher.probes import StartError
from launcher.runner import Launcher
from launcher.services import infra_services
from tests.private_stack import free_layout


@pytest.fixture
def redis_only(tmp_path: Path) -> Iterator[Launcher]:
    layout = free_layout("unit", tmp_path / "run")
    launcher = Launcher(layout, [s for s in infra_services(layout) if s.name == "redis"])
    yield launcher
    launcher.down()  # whatever a failed assertion left running


def running(pid: int) -> bool:
    return process._running(pid) is not None


def test_up_is_idempotent_and_down_stops_only_what_it_started(redis_only: Launcher) -> None:
    redis_only.up()
    first = process.read_pid_file(redis_only.pid_file("redis"))
    assert first is not None and running(first.pid)
    assert redis_only.started == ["redis"]

    client = redis.Redis.from_url(redis_only.layout.redis_url)
    client.set("launcher-test", "kept")
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "800"
    assert client.config_get("dir")["dir"] == str(redis_only.layout.run_dir / "redis")

    redis_only.up()  # a live process of ours is left alone
    second = process.read_pid_file(redis_only.pid_file("redis"))
    assert second == first
    assert redis_only.started == ["redis"]
    assert client.get("launcher-test") == b"kept"

    [row] = redis_only.status()
    assert (row.name, row.pid, row.state, row.healthy) == ("redis", first.pid, "running", True)

    redis_only.down()
    assert not running(first.pid)
    assert not redis_only.pid_file("redis").exists()
    assert not process.port_in_use(redis_only.layout.redis_port)
    [row] = redis_only.status()
    assert (row.pid, row.state, row.healthy) == (None, "stopped", False)


def test_stale_pid_file_is_replaced(redis_only: Launcher) -> None:
    pid_file = redis_only.pid_file("redis")
    pid_file.parent.mkdir(parents=True)
    # Above Linux's largest pid_max (2**22): no process can have it.
    dead = process.PidRecord(pid=2**22 + 7, start_ticks=1, fingerprint=("redis-server",), argv=())
    process.write_pid_file(pid_file, dead)

    redis_only.up()
    record = process.read_pid_file(pid_file)
    assert record is not None and record.pid != dead.pid and running(record.pid)


def test_port_held_by_a_stranger_fails_clearly(redis_only: Launcher) -> None:
    port = redis_only.layout.redis_port
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        with pytest.raises(StartError, match=rf"port {port} is already in use.*did not start"):
            redis_only.up()
    assert redis_only.started == []
    assert not redis_only.pid_file("redis").exists()


@pytest.mark.parametrize("mismatch", ["command line", "start time"])
def test_down_never_signals_a_process_it_did_not_start(redis_only: Launcher, mismatch: str) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        stat = process._stat(stranger.pid)
        assert stat is not None
        # A pid file naming the stranger: either its command line is not a Redis's, or
        # its start time differs (the pid was reused after our process ended).
        record = process.PidRecord(
            pid=stranger.pid,
            start_ticks=stat.start_ticks if mismatch == "command line" else stat.start_ticks - 1,
            fingerprint=("redis-server",) if mismatch == "command line" else ("sleep",),
            argv=("redis-server",),
        )
        pid_file = redis_only.pid_file("redis")
        pid_file.parent.mkdir(parents=True)
        process.write_pid_file(pid_file, record)

        redis_only.down()

        assert stranger.poll() is None, "down signalled a process it did not start"
        assert not pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


# The main thread leaves (pthread_exit) while another thread still holds a listening
# socket for a while, as a JVM's shutdown hooks do after SIGTERM.
_MAIN_THREAD_LEAVES_FIRST = """
import ctypes, signal, socket, sys, threading, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
def finish(*_):
    threading.Thread(target=lambda: (time.sleep(1.5), server.close())).start()
    ctypes.CDLL(None).pthread_exit(None)
signal.signal(signal.SIGTERM, finish)
print("listening", flush=True)
while True:
    time.sleep(0.1)
"""


def test_stop_waits_for_every_thread_of_a_process_not_its_main_one(tmp_path: Path) -> None:
    """A process whose main thread has exited shows as a zombie while its other threads
    finish; it still holds its ports. Stopped, it counts as gone only once they are
    released, so a start right after finds them free (a rolled Kafka broker's JMX port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "slow_exit.py"
    script.write_text(_MAIN_THREAD_LEAVES_FIRST)
    log = tmp_path / "slow_exit.log"
    record = process.spawn(
        [sys.executable, str(script), str(port)],
        pid_file=tmp_path / "slow_exit.pid", log_file=log, fingerprint=[str(script)],
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while "listening" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert process.stop(record, "slow-exit")
    assert not process.port_in_use(port)
    assert not process.alive(record)
