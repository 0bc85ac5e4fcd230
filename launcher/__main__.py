"""python -m launcher {up,down,status,logs,fetch}: the local stack without Docker."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudcore.logs import setup_logging
from launcher import kafka
from launcher.layout import Profile, layout_for
from launcher.probes import StartError
from launcher.runner import Launcher, Status

logger = logging.getLogger(__name__)
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
# Errors go to stderr unwrapped: they quote log lines and paths.
errors = Console(stderr=True, soft_wrap=True, highlight=False)

ProfileOption = Annotated[
    Profile,
    typer.Option(
        "--profile", "-p",
        help="stack: the .env ports, data kept in .run/stack. "
        "test: the TEST_* ports, fresh data in .run/test. "
        "cluster: 3 Kafka brokers, a 6-node Redis Cluster, the CLUSTER_* ports, "
        "data kept in .run/cluster.",
    ),
]  # fmt: skip
ServicesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--services", "-s",
        help="Only these services (repeat or comma-separate); default: all of the profile.",
    ),
]  # fmt: skip


def _names(services: list[str] | None) -> list[str] | None:
    if not services:
        return None
    return [name.strip() for item in services for name in item.split(",") if name.strip()]


def _launcher(profile: Profile) -> Launcher:
    setup_logging("launcher")
    return Launcher(layout_for(profile))


@app.command()
def up(profile: ProfileOption = "stack", services: ServicesOption = None) -> None:
    """Start the services (idempotent) and wait until each is healthy."""
    launcher = _launcher(profile)
    try:
        launcher.up(_names(services))
    except (StartError, ValueError) as exc:
        errors.print(f"[red]up failed:[/red] {exc}")
        raise typer.Exit(1) from None
    _print_status(launcher)


@app.command()
def down(profile: ProfileOption = "stack", services: ServicesOption = None) -> None:
    """Stop the services this launcher started (and nothing else)."""
    try:
        _launcher(profile).down(_names(services))
    except ValueError as exc:
        errors.print(f"[red]down failed:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def status(profile: ProfileOption = "stack") -> None:
    """Table of the services: pid, ports, state, health. Exit 1 if one is unhealthy."""
    rows = _print_status(_launcher(profile))
    if any(r.state == "running" and not r.healthy for r in rows):
        raise typer.Exit(1)


def _print_status(launcher: Launcher) -> list[Status]:
    rows = launcher.status()
    table = Table(title=f"profile {launcher.layout.profile} ({launcher.layout.run_dir})")
    # A role column only for a profile with cluster nodes (broker, master, replica).
    roles = any(s.role is not None for s in launcher.services)
    for column in ("service", "pid", "port", "state", "healthy", *(["role"] if roles else [])):
        table.add_column(column)
    for row in rows:
        healthy = "[green]yes[/green]" if row.healthy else "[red]no[/red]"
        table.add_row(
            row.name,
            str(row.pid or "-"),
            ",".join(map(str, row.ports)),
            row.state,
            healthy if row.state == "running" else "-",
            *([row.role or "-"] if roles else []),
        )
    console.print(table)
    return rows


@app.command()
def logs(
    profile: ProfileOption = "stack",
    services: ServicesOption = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines per log.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep following.")] = False,
) -> None:
    """The end of each service's log (or follow them with -f)."""
    launcher = _launcher(profile)
    try:
        selected = launcher.select(_names(services))
    except ValueError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    files = [launcher.log_file(s.name) for s in selected if launcher.log_file(s.name).exists()]
    if not files:
        console.print(f"no logs in {launcher.layout.run_dir}")
        return
    # tail prints a "==> file <==" header per file; -F keeps following across restarts.
    os.execvp("tail", ["tail", f"-n{lines}", *(["-F"] if follow else []), *map(str, files)])


@app.command()
def fetch() -> None:
    """Download Kafka's jars, its tools jar and the JMX exporter agent into .cache (once;
    later runs are a no-op)."""
    setup_logging("launcher")
    try:
        libs = kafka.fetch_jars()
        agent = kafka.fetch_jmx_agent()
        tools = kafka.fetch_tools()
    except RuntimeError as exc:
        errors.print(f"[red]fetch failed:[/red] {exc}")
        raise typer.Exit(1) from None
    logger.info("kafka jars in %s, tools in %s, jmx exporter agent %s", libs, tools, agent)


if __name__ == "__main__":
    sys.exit(app())
