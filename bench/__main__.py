"""python -m bench: throughput, latency and memory of one real scorer process against the
running stack, with the naive one-message-at-a-time scorer measured in the same run.

Addresses come from the environment or the root .env (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL,
MLFLOW_TRACKING_URI). Every topic, consumer group, Redis key and model the run creates is
its own and is removed at the end. Results: bench/results/<time>.json, .md and
-latency.png; with --readme the summary also replaces the results section of
bench/README.md.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench import report
from bench.config import BenchSettings, Plan, Stack
from bench.machine import loadavg
from fraudcore.logs import kv, setup_logging
from fraudcore.settings import REPO_ROOT, load_settings

logger = logging.getLogger(__name__)
app = typer.Typer(add_completion=False, help=__doc__)
console = Console()
RESULTS = REPO_ROOT / "bench" / "results"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _probe(stack: Stack) -> list[str]:
    from launcher import probes

    down = []
    if not probes.kafka_ok(stack.kafka_bootstrap):
        down.append(f"Kafka at {stack.kafka_bootstrap}")
    if not probes.redis_ok(stack.redis_url):
        down.append(f"Redis at {stack.redis_url}")
    if not probes.http_ok(stack.mlflow_uri.rstrip("/") + "/health"):
        down.append(f"MLflow at {stack.mlflow_uri}")
    return down


def _ensure_stack(stack: Stack) -> None:
    """Start Kafka, Redis and MLflow with the launcher if they are not answering, but only
    when the addresses are the launcher's own (the .env stack)."""
    from launcher.layout import layout_for

    down = _probe(stack)
    if not down:
        return
    layout = layout_for("stack")
    ours = (layout.kafka_bootstrap, layout.redis_url, layout.mlflow_uri)
    if (
        stack.kafka_bootstrap,
        stack.redis_url,
        stack.mlflow_uri.replace("localhost", "127.0.0.1"),
    ) != ours:
        raise typer.BadParameter(
            f"not reachable: {', '.join(down)}; these are not the launcher's addresses, "
            "so start that stack yourself"
        )
    console.print(f"not running: {', '.join(down)} -> python -m launcher up (infrastructure)")
    subprocess.run(
        [sys.executable, "-m", "launcher", "up", "--services", "kafka,redis,mlflow"],
        cwd=REPO_ROOT,
        check=True,
    )


def _wait_quiet(limit: float, minutes: float) -> None:
    """Wait (bounded) until the 1-minute load average is under `limit`."""
    deadline = time.monotonic() + minutes * 60
    while loadavg()[0] >= limit and time.monotonic() < deadline:
        logger.info("waiting for a quiet machine %s", kv(load1=loadavg()[0], below=limit))
        time.sleep(30)
    logger.info("measuring %s", kv(load1=loadavg()[0]))


@app.command()
def run(
    days: Annotated[int, typer.Option(help="Days of the handbook replayed (drain input).")] = 31,
    month_start: Annotated[str, typer.Option(help="First day of the drain input.")] = "2018-07-01",
    drain_limit: Annotated[
        int | None, typer.Option(help="At most this many transactions in the drain.")
    ] = None,
    loads: Annotated[
        str, typer.Option(help="Offered loads for the latency runs, tx/s, comma-separated.")
    ] = "1000,2500,5000,10000",
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up per load level.")] = 10.0,
    measure: Annotated[float, typer.Option(help="Measured seconds per load level.")] = 40.0,
    load_users: Annotated[int, typer.Option(help="Cards in the open-loop traffic.")] = 200_000,
    naive_messages: Annotated[int, typer.Option(help="Naive baseline: max messages.")] = 3000,
    naive_seconds: Annotated[float, typer.Option(help="Naive baseline: max seconds.")] = 60.0,
    at_least_once: Annotated[
        bool, typer.Option(help="Also measure SCORER_DELIVERY=at_least_once.")
    ] = True,
    alo_loads: Annotated[
        str, typer.Option(help="Offered loads of the at-least-once latency run, tx/s.")
    ] = "1000,5000",
    warm_up: Annotated[
        bool, typer.Option(help="First an unmeasured exactly-once drain (warms the broker).")
    ] = True,
    no_scores_variant: Annotated[
        bool, typer.Option(help="Also drain with SCORER_EMIT_SCORES=false.")
    ] = True,
    plain_memory: Annotated[
        bool, typer.Option(help="Also replay the plain handbook columns (memory figure).")
    ] = True,
    trees: Annotated[int, typer.Option(help="IsolationForest trees.")] = 150,
    train_days: Annotated[int, typer.Option(help="Days before the month to fit on.")] = 7,
    out_dir: Annotated[Path, typer.Option(help="Where results go.")] = RESULTS,
    readme: Annotated[bool, typer.Option(help="Write the summary into bench/README.md.")] = False,
    ensure_stack: Annotated[
        bool, typer.Option(help="Start Kafka/Redis/MLflow with the launcher if not running.")
    ] = False,
    wait_quiet: Annotated[
        float, typer.Option(help="Wait up to this many minutes for a quiet machine.")
    ] = 0.0,
    quiet_load: Annotated[float, typer.Option(help="'Quiet': 1-minute load below this.")] = 1.5,
    settle: Annotated[
        float,
        typer.Option(help="Before each measurement, wait up to this many seconds for quiet."),
    ] = 0.0,
    keep: Annotated[bool, typer.Option(help="Keep topics, keys and model (debugging).")] = False,
    scorer_setting: Annotated[
        list[str] | None,
        typer.Option(
            help="SCORER_X=value for the scorer under test (repeatable): an A/B of a setting."
        ),
    ] = None,
) -> None:
    """Run the benchmark and print the summary table."""
    from bench.runner import execute

    setup_logging("bench")
    stack = Stack.from_settings(load_settings(BenchSettings))
    if ensure_stack:
        _ensure_stack(stack)
    down = _probe(stack)
    if down:
        console.print(f"[red]not reachable:[/red] {', '.join(down)}")
        raise typer.Exit(1)
    if wait_quiet > 0:
        _wait_quiet(quiet_load, wait_quiet)
    plan = Plan(
        month_start=month_start,
        days=days,
        drain_limit=drain_limit,
        modes=("exactly_once", "at_least_once") if at_least_once else ("exactly_once",),
        warm_up=warm_up,
        no_scores_variant=no_scores_variant,
        plain_memory=plain_memory,
        loads=_ints(loads),
        warmup_s=warmup,
        measure_s=measure,
        load_users=load_users,
        alo_latency_loads=_ints(alo_loads) if at_least_once else (),
        naive_messages=naive_messages,
        naive_seconds=naive_seconds,
        train_days=train_days,
        trees=trees,
        settle_below=quiet_load if settle > 0 else 0.0,
        settle_s=settle,
        scorer_env=_scorer_settings(scorer_setting or []),
    )
    command = "python -m bench " + shlex.join(sys.argv[1:])
    results = execute(stack, plan, out_dir, command.strip())
    summary = report.markdown(results)
    if readme:
        report.update_readme(summary)
    console.print(summary, markup=False, highlight=False)
    console.print(f"results: {results['files']}")


def _scorer_settings(items: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("SCORER_"):
            raise typer.BadParameter(f"expected SCORER_NAME=value, got {item!r}")
        settings[name] = value
    return settings


if __name__ == "__main__":
    sys.exit(app())
