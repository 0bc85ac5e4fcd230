"""up / down / status over a set of services sharing one run folder."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dotenv import dotenv_values

from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT, env_file
from launcher import process
from launcher.apps import BOOTSTRAP_TIMEOUT_S, bootstrap, missing_entry_point
from launcher.layout import Layout
from launcher.probes import StartError, tail, wait_until
from launcher.services import Service, all_services

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Status:
    name: str
    pid: int | None
    ports: tuple[int, ...]
    state: str  # running | stopped | stale pid file | not built | skipped
    healthy: bool
    # Its part in a cluster ("master (5461 slots)", "replica of :17001"); "" otherwise.
    role: str = ""


class Launcher:
    def __init__(self, layout: Layout, services: Sequence[Service] | None = None) -> None:
        self.layout = layout
        self.services = list(services if services is not None else all_services(layout))
        # Names of the services this object started, in start order: what a caller that
        # must clean up after itself (the test fixture) hands back to down().
        self.started: list[str] = []

    def pid_file(self, name: str) -> Path:
        return self.layout.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.layout.run_dir / f"{name}.log"

    def select(self, names: Sequence[str] | None) -> list[Service]:
        if not names:
            return list(self.services)
        known = {s.name for s in self.services}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(
                f"unknown service(s) {', '.join(unknown)} in profile {self.layout.profile}; "
                f"known: {', '.join(s.name for s in self.services)}"
            )
        return [s for s in self.services if s.name in names]

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One up/down at a time per run folder (two test sessions starting together)."""
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.layout.run_dir / ".launcher.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another launcher %s", kv(run_dir=self.layout.run_dir))
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # --- up ---------------------------------------------------------------------------

    def up(self, names: Sequence[str] | None = None) -> None:
        """Start what is not running yet and wait until all selected services are healthy.
        Infrastructure first, then the apps; those that need a model after the bootstrap."""
        with self._lock():
            selected = self.select(names)
            runnable = []
            for service in selected:
                reason = service.missing
                if reason:
                    logger.warning(
                        "skipped %s",
                        kv(service=service.name, profile=self.layout.profile, reason=reason),
                    )
                else:
                    runnable.append(service)
            self._start_all([s for s in runnable if s.infra])
            self._start_all([s for s in runnable if not s.infra and not s.needs_model])
            late = [s for s in runnable if s.needs_model]
            if late:
                self._bootstrap()
                self._start_all(late)

    def _start_all(self, services: list[Service]) -> None:
        # Everything is started before anything is waited for: the slow starters (Kafka's
        # JVM, MLflow's migrations) then come up side by side.
        to_start = []
        for service in services:
            record = process.read_pid_file(self.pid_file(service.name))
            if record is not None and process.is_ours(record):
                logger.info("already running %s", kv(service=service.name, pid=record.pid))
                continue
            if record is not None:
                logger.info("removing stale pid file %s", kv(service=service.name))
                self.pid_file(service.name).unlink(missing_ok=True)
            to_start.append(service)
        self._check_ports(to_start)
        for service in to_start:
            self._spawn(service)
        for service in services:
            self._wait_healthy(service)

    def _check_ports(self, services: list[Service]) -> None:
        for service in services:
            for port in service.ports:
                if process.port_in_use(port):
                    raise StartError(
                        f"{service.name}: port {port} is already in use by "
                        f"{process.who_listens(port)}, which this launcher did not start "
                        f"(no live pid file in {self.layout.run_dir}). Stop that process "
                        f"or change the port in .env."
                    )

    def _spawn(self, service: Service) -> None:
        if self.layout.fresh and service.data_dir is not None:
            shutil.rmtree(service.data_dir, ignore_errors=True)
        if service.prepare is not None:
            service.prepare()
        record = process.spawn(
            service.argv,
            pid_file=self.pid_file(service.name),
            log_file=self.log_file(service.name),
            fingerprint=service.fingerprint,
            env={**service.env, **self._secrets(service.secrets)},
            cwd=REPO_ROOT,
            truncate_log=self.layout.fresh,
        )
        self.started.append(service.name)
        logger.info("started %s", kv(service=service.name, pid=record.pid, ports=service.ports))

    def _secrets(self, names: Sequence[str]) -> dict[str, str]:
        """Values for the required secrets neither the environment nor .env sets,
        generated once per run folder and kept there (mode 0600)."""
        dotenv_path = env_file()
        configured = {**(dotenv_values(dotenv_path) if dotenv_path else {}), **os.environ}
        wanted = [name for name in names if not configured.get(name)]
        if not wanted:
            return {}
        path = self.layout.run_dir / "secrets.env"
        stored = {k: v for k, v in dotenv_values(path).items() if v} if path.exists() else {}
        for name in wanted:
            if name not in stored:
                stored[name] = secrets.token_urlsafe(24)
                logger.warning("generated a local secret %s", kv(name=name, file=path))
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in stored.items()))
        return {name: stored[name] for name in wanted}

    def _wait_healthy(self, service: Service) -> None:
        record = process.read_pid_file(self.pid_file(service.name))
        if record is None:
            raise StartError(f"{service.name}: no pid file after start")
        wait_until(
            service.probe,
            what=f"{service.name} ({service.health})",
            timeout_s=service.timeout_s,
            alive=partial(process.alive, record),
            log_file=self.log_file(service.name),
        )
        if service.on_healthy is not None:
            service.on_healthy()

    def _bootstrap(self) -> None:
        command = bootstrap(self.layout.cards)
        missing = missing_entry_point(command[0])
        if missing:
            logger.warning("skipped model bootstrap %s", kv(reason=missing))
            return
        log_file = self.log_file("-".join(command[:2]))
        argv = [sys.executable, "-m", *command]
        logger.info("model bootstrap %s", kv(command=" ".join(argv[1:]), log=log_file))
        with open(log_file, "a") as log:
            try:
                code = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT, timeout=BOOTSTRAP_TIMEOUT_S,
                    env={**os.environ, **self.layout.app_env},
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                raise StartError(
                    f"model bootstrap still running after {BOOTSTRAP_TIMEOUT_S:.0f}s; "
                    f"log: {log_file}"
                ) from None
        if code != 0:
            raise StartError(f"model bootstrap exited {code}; log: {log_file}\n{tail(log_file)}")

    # --- down / status ------------------------------------------------------------------

    def down(self, names: Sequence[str] | None = None) -> None:
        """Stop, in reverse start order (a cluster's nodes together), the selected
        services whose pid files name a live process of ours; stale pid files are removed
        and nothing else is signalled."""
        with self._lock():
            for batch in _stop_batches(list(reversed(self.select(names)))):
                found = [
                    (service, record)
                    for service in batch
                    if (record := process.read_pid_file(self.pid_file(service.name))) is not None
                ]
                stopped = process.stop_together([(r, s.name) for s, r in found])
                for (service, record), ours in zip(found, stopped, strict=True):
                    if not ours:
                        logger.info(
                            "not running (stale pid file removed, nothing signalled) %s",
                            kv(service=service.name, pid=record.pid),
                        )
                    self.pid_file(service.name).unlink(missing_ok=True)

    def status(self) -> list[Status]:
        rows = []
        for service in self.services:
            record = process.read_pid_file(self.pid_file(service.name))
            live = record is not None and process.is_ours(record)
            if service.missing:
                state = "not built"
            elif live:
                state = "running"
            else:
                state = "stale pid file" if record is not None else "stopped"
            rows.append(
                Status(
                    name=service.name,
                    pid=record.pid if live and record else None,
                    ports=service.ports,
                    state=state,
                    healthy=live and service.probe(),
                    role=service.role() if live and service.role is not None else "",
                )
            )
        return rows


def _stop_batches(services: list[Service]) -> list[list[Service]]:
    """Consecutive services of one stop group (a cluster's nodes) in one batch, each
    other service alone."""
    batches: list[list[Service]] = []
    for service in services:
        if batches and service.stop_group and batches[-1][0].stop_group == service.stop_group:
            batches[-1].append(service)
        else:
            batches.append([service])
    return batches
