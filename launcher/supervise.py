"""`python -m launcher.supervise [options] -- <command>`: run a service, restart it when it fails.

What a restart policy (`restart: unless-stopped`) does in Docker Compose, for the launched
stack: the apps exit non-zero on purpose when they cannot go on (the scorer's watchdog,
an outage past its limit, a fatal Kafka error) and rely on something to start them again.

- The command runs as a child in the supervisor's process group, so the launcher's
  `down` (SIGTERM to the group) reaches both; on SIGTERM or SIGINT the supervisor passes
  the signal on, waits for the child and exits with its code, restarting nothing.
- A child that exits 0 is done: the supervisor exits 0 too.
- A child that exits otherwise is started again after a backoff that doubles from
  `--backoff-s` up to `--max-backoff-s`, and starts over once a run has lasted
  `--stable-after-s`. Every start and exit is a log line, in the child's log.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from fraudcore.logs import kv, setup_logging

logger = logging.getLogger("launcher.supervise")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launcher.supervise",
        description="Run a command; start it again whenever it exits non-zero.",
    )
    parser.add_argument("--name", default="service", help="name in the log lines")
    parser.add_argument("--backoff-s", type=float, default=1.0, help="first restart delay")
    parser.add_argument("--max-backoff-s", type=float, default=30.0, help="longest delay")
    parser.add_argument(
        "--stable-after-s", type=float, default=60.0, help="a run this long resets the backoff"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given (put it after --)")
    return args


def supervise(
    command: list[str],
    name: str,
    backoff_s: float,
    max_backoff_s: float,
    stable_after_s: float,
    stopping: threading.Event,
) -> int:
    delay = backoff_s
    starts = 0
    while True:
        starts += 1
        started = time.monotonic()
        child = subprocess.Popen(command)
        logger.info("started %s", kv(service=name, pid=child.pid, start=starts))
        code = _wait(child, stopping)
        ran_s = time.monotonic() - started
        if stopping.is_set() or code == 0:
            logger.info("exited %s", kv(service=name, code=code, ran_s=round(ran_s, 1)))
            return code
        if ran_s >= stable_after_s:
            delay = backoff_s
        logger.warning(
            "failed, restarting %s",
            kv(service=name, code=code, ran_s=round(ran_s, 1), restart_in_s=delay),
        )
        if stopping.wait(delay):
            return code
        delay = min(max_backoff_s, delay * 2)


def _wait(child: subprocess.Popen[bytes], stopping: threading.Event) -> int:
    forwarded = False
    while True:
        try:
            return child.wait(0.2)
        except subprocess.TimeoutExpired:
            if stopping.is_set() and not forwarded:
                forwarded = True
                child.send_signal(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging("supervise")
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping %s", kv(service=args.name, signal=signal.Signals(signum).name))
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervise(
        args.command,
        args.name,
        args.backoff_s,
        args.max_backoff_s,
        args.stable_after_s,
        stopping,
    )


if __name__ == "__main__":
    sys.exit(main())
