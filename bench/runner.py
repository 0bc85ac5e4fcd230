"""One benchmark run, start to finish: input, model, drains, latency levels, the naive
baseline, Redis memory; everything it creates (topics, keys, model) is removed after."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench import data, latency, model, report, throughput
from bench.config import Plan, Stack
from bench.deployment import Deployment, short_id, topic_names
from bench.machine import LoadMonitor, loadavg, machine, settle
from bench.redisstats import server_stats, state_memory
from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT, TopicSettings

logger = logging.getLogger(__name__)
LOG_DIR = REPO_ROOT / "bench" / "results" / "logs"
WARM_UP_RUN = "warm-up (exactly_once, not a target)"
# Every scorer the benchmark starts: quiet logs, and leftovers of an interrupted run expire.
SCORER_ENV = {"SCORER_FEATURE_TTL_S": "7200", "LOG_LEVEL": "WARNING"}


def bench_topics(name: str) -> TopicSettings:
    """The transactions topic named as long as the real one ("bx1a2b3c-tx" beside
    "transactions"): the merchant state keeps one offset per "topic:partition", so the
    memory figure is not inflated by the benchmark's naming."""
    return topic_names(name, transactions="tx")


def _day_before(start: str, days: int) -> str:
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC) - timedelta(days=days)
    return begin.strftime("%Y-%m-%d")


def run_naive(world: Deployment, stack: Stack, model_name: str, plan: Plan) -> dict[str, Any]:
    """The naive scorer over the same pre-filled topic, in its own process."""
    run = world.sibling("naive")
    argv = [
        sys.executable, "-m", "bench.naive_scorer",
        "--bootstrap", stack.kafka_bootstrap, "--redis", stack.redis_url,
        "--mlflow", stack.mlflow_uri, "--model", model_name, "--topic", world.transactions,
        "--scores", world.scores, "--alerts", world.alerts,
        "--group", run.group, "--prefix", run.key_prefix,
        "--max-messages", str(plan.naive_messages), "--max-seconds", str(plan.naive_seconds),
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, timeout=plan.naive_seconds + 300
    )
    if done.returncode != 0:
        raise RuntimeError(f"naive scorer failed:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    span = result["last_commit"] - result["first_commit"]
    # n commits span n - 1 intervals
    result["tx_s"] = round((result["messages"] - 1) / span, 1) if span > 0 else 0.0
    return result


def execute(
    stack: Stack, plan: Plan, out_dir: Path, command: str, keep: bool = False
) -> dict[str, Any]:
    """Run the whole benchmark; returns the results and writes JSON, Markdown and PNG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": machine(),
        "plan": asdict(plan),
        "load_before": loadavg(),
        "stack": {"kafka": stack.kafka_bootstrap, "redis": stack.redis_url},
    }
    results["stack"]["redis_version"] = server_stats(stack.redis_url)["version"]
    model_name = f"bench-{uuid.uuid4().hex[:8]}"
    worlds: list[Deployment] = []

    def world() -> Deployment:
        made = Deployment(
            stack, model_name, name=f"bx{short_id()[:6]}", naming=bench_topics,
            env={**SCORER_ENV, **plan.scorer_env}, log_dir=LOG_DIR,
        )  # fmt: skip
        made.create_topics(plan.partitions)
        worlds.append(made)
        return made

    with LoadMonitor() as monitor:
        run_started = time.time()
        try:
            _run(results, stack, plan, model_name, world, monitor)
        finally:
            if not keep:
                for made in worlds:
                    made.cleanup()
                model.unregister(stack.mlflow_uri, model_name)
        results["load_during"] = monitor.between(run_started, time.time())
    results["worlds"] = [made.name for made in worlds]
    results["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["targets"] = report.targets(results)
    summary = report.markdown(results)
    report.write_json(out_dir / f"{stamp}.json", results)
    (out_dir / f"{stamp}.md").write_text(summary)
    if results.get("latency"):
        report.plot(out_dir / f"{stamp}-latency.png", results)
    results["files"] = {
        "json": str(out_dir / f"{stamp}.json"),
        "markdown": str(out_dir / f"{stamp}.md"),
        "plot": str(out_dir / f"{stamp}-latency.png") if results.get("latency") else None,
    }
    return results


def _run(
    results: dict[str, Any],
    stack: Stack,
    plan: Plan,
    model_name: str,
    new_world: Any,
    monitor: LoadMonitor,
) -> None:
    t = time.monotonic()
    training = data.month(
        _day_before(plan.month_start, plan.train_days),
        plan.train_days,
        limit=plan.train_limit,
        source=plan.source,
    )
    fitted = model.fit(training, plan.trees)
    model.register(stack.mlflow_uri, model_name, fitted)
    results["model"] = {
        "name": model_name,
        "trees": plan.trees,
        "training_rows": len(training.records),
        "threshold": fitted.threshold,
        "fit_and_register_s": round(time.monotonic() - t, 1),
    }
    logger.info("model ready %s", kv(**results["model"]))

    month = data.month(plan.month_start, plan.days, limit=plan.drain_limit, source=plan.source)
    drain_world = new_world()
    prefill_s = throughput.prefill(stack.kafka, drain_world.transactions, month.encoded())
    results["input"] = {
        "source": month.source,
        "transactions": len(month.records),
        "users": month.users,
        "prefill_s": round(prefill_s, 1),
    }
    n = len(month.records)
    runs: dict[str, Any] = {}
    results["throughput"] = runs
    results["memory"] = {}

    def quiet() -> None:
        settle(plan.settle_below, plan.settle_s)

    if plan.warm_up:
        quiet()
        runs[WARM_UP_RUN] = throughput.drain(
            drain_world, "warm-up", n, monitor, SCORER_DELIVERY="exactly_once"
        )
    for mode in plan.modes:
        quiet()
        runs[mode] = throughput.drain(drain_world, mode, n, monitor, SCORER_DELIVERY=mode)
        if mode == "exactly_once":
            results["memory"]["enriched"] = state_memory(
                stack.redis_url, drain_world.sibling(mode).key_prefix
            )
    if plan.no_scores_variant:
        quiet()
        runs["exactly_once_no_scores"] = throughput.drain(
            drain_world, "no-scores", n, monitor, SCORER_EMIT_SCORES="false"
        )
    if plan.naive_messages > 0:
        quiet()
        naive_started = time.time()
        results["naive"] = run_naive(drain_world, stack, model_name, plan)
        results["naive"]["machine"] = monitor.between(naive_started, time.time())
        logger.info("naive baseline %s", kv(tx_s=results["naive"]["tx_s"]))
    drain_world.cleanup()

    if plan.plain_memory:
        plain = data.month(
            plan.month_start, plan.days, limit=plan.drain_limit, enrich=False, source=plan.source
        )
        plain_world = new_world()
        throughput.prefill(stack.kafka, plain_world.transactions, plain.encoded())
        quiet()
        runs["exactly_once_plain_handbook"] = throughput.drain(
            plain_world, "plain", len(plain.records), monitor
        )
        results["memory"]["plain handbook columns"] = state_memory(
            stack.redis_url, plain_world.sibling("plain").key_prefix
        )
        plain_world.cleanup()

    latency_runs: list[tuple[str, str, tuple[int, ...]]] = []
    if plan.loads:
        latency_runs.append(("exactly_once", "latency-eos", plan.loads))
    if plan.alo_latency_loads and "at_least_once" in plan.modes:
        latency_runs.append(("at_least_once", "latency-alo", plan.alo_latency_loads))
    results["latency"] = {}
    for mode, run, loads in latency_runs:
        load_world = new_world()
        try:
            results["latency"][mode] = latency.levels(
                load_world, run, loads, plan.warmup_s, plan.measure_s,
                plan.load_users, plan.load_merchants, monitor, quiet, SCORER_DELIVERY=mode,
            )  # fmt: skip
        finally:
            load_world.cleanup()
