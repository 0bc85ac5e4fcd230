"""The results of a run: JSON, a Markdown summary, the latency plot, bench/README.md."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

TARGET_TX_S = 20_000  # one scorer process, exactly once
TARGET_CPU_US_PER_TX = 80.0  # scorer + Redis + broker
TARGET_P99_MS = {1000: 50.0, 5000: 100.0, 10_000: 100.0}  # by offered tx/s, exactly once
TARGET_REDIS_BYTES_PER_USER = 4096


def _finite(value: Any) -> Any:
    """JSON has no infinity: a score that never arrived is reported as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(_finite(results), option=orjson.OPT_INDENT_2))


def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a (scores missing)"
    return f"{value:,.{digits}f}{unit}"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def _load(machine: dict[str, Any] | None, others: float | None = None) -> str:
    """Load average during a measurement and, when known, the CPU (in cores) that
    processes other than the scorer, Kafka, Redis and the benchmark used meanwhile."""
    if not machine:
        return ""
    text = f"{machine['load1_mean']:.1f} (max {machine['load1_max']:.1f})"
    if others is not None:
        text += f"; others {others:.2f} cores"
    return text


def total_cpu_us_per_tx(run: dict[str, Any]) -> float | None:
    """Scorer + broker + Redis CPU per transaction of a drain (the neighbours' CPU over
    the same window, shared out over the same transactions)."""
    scorer_s, per_tx = run.get("scorer_cpu_s"), run.get("scorer_cpu_us_per_tx")
    neighbours = run.get("neighbours_cpu_s") or {}
    if not scorer_s or not per_tx or not {"kafka", "redis"} <= set(neighbours):
        return None
    return float(per_tx * (1 + (neighbours["kafka"] + neighbours["redis"]) / scorer_s))


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    out = []
    main = results.get("throughput", {}).get("exactly_once")
    if main:
        out.append(
            {
                "target": "one scorer process, sustained (exactly once)",
                "goal": f">= {TARGET_TX_S:,} tx/s",
                "measured": f"{main['steady_tx_s']:,} tx/s",
                "met": main["steady_tx_s"] >= TARGET_TX_S,
                "load": _load(main["machine"], main.get("others_cpu_cores")),
            }
        )
        total = total_cpu_us_per_tx(main)
        if total is not None:
            neighbours = main["neighbours_cpu_s"]
            share = main["scorer_cpu_us_per_tx"] / main["scorer_cpu_s"]
            out.append(
                {
                    "target": "CPU per transaction, scorer + Redis + broker",
                    "goal": f"<= {TARGET_CPU_US_PER_TX:.0f} µs",
                    "measured": f"{total:.1f} µs ({main['scorer_cpu_us_per_tx']:.1f} + "
                    f"{neighbours['redis'] * share:.1f} + {neighbours['kafka'] * share:.1f})",
                    "met": total <= TARGET_CPU_US_PER_TX,
                    "load": _load(main["machine"], main.get("others_cpu_cores")),
                }
            )
    for rate, goal in TARGET_P99_MS.items():
        level = _level(results, "exactly_once", rate)
        if level:
            p99 = level.get("p99_ms")
            out.append(
                {
                    "target": f"p99 end-to-end at {rate:,} tx/s",
                    "goal": f"<= {goal:.0f} ms",
                    "measured": _num(p99, " ms", 1),
                    "met": p99 is not None and p99 <= goal,
                    "load": _load(level["machine"], level.get("others_cpu_cores")),
                }
            )
    memory = results.get("memory", {}).get("enriched")
    if memory and memory.get("users"):
        per_user = memory["bytes_per_active_user"]
        out.append(
            {
                "target": "Redis per active user",
                "goal": f"<= {TARGET_REDIS_BYTES_PER_USER / 1024:.0f} KB",
                "measured": f"{per_user:,} B",
                "met": per_user <= TARGET_REDIS_BYTES_PER_USER,
                "load": "",
            }
        )
    naive = results.get("naive")
    if naive and main and naive.get("tx_s"):
        ratio = main["steady_tx_s"] / naive["tx_s"]
        out.append(
            {
                "target": "the naive baseline, same run and input",
                "goal": "runs",
                "measured": f"{naive['tx_s']:,.0f} tx/s: ours is {ratio:,.0f}x",
                "met": True,
                "load": _load(naive["machine"]),
            }
        )
    return out


def _level(results: dict[str, Any], mode: str, rate: int) -> dict[str, Any] | None:
    for level in results.get("latency", {}).get(mode, {}).get("levels", []):
        if level["offered_tx_s"] == rate:
            return dict(level)
    return None


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Run {results['started']} on {m['cores']} cores ({m['cpu_model']}), "
        f"{m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, "
        f"Redis {results['stack'].get('redis_version', '?')}; Kafka, Redis and MLflow on the "
        f"same machine. Load average (1 min) before the run: {results['load_before'][0]:.2f}; "
        f"mean during it: {results['load_during']['load1_mean']:.2f}.",
        "",
        f"Command: `{results['command']}`",
        "",
        "*Other work* = CPU (in cores) that processes other than the scorer, Kafka, Redis, "
        "the load generator and the benchmark used during a measurement, i.e. other jobs "
        "on the shared machine.",
        "",
        f"Input: {results['input']['source']}, {results['input']['transactions']:,} "
        f"transactions, {results['input']['users']:,} cards. Model: IsolationForest, "
        f"{results['model']['trees']} trees (what `python -m trainer` fits), registered in MLflow.",
        "",
        "| target | goal | measured | met | load avg during (1 min); other work |",
        "|---|---|---|---|---|",
    ]
    for t in targets(results):
        lines.append(
            f"| {t['target']} | {t['goal']} | {t['measured']} | {_met(t['met'])} | {t['load']} |"
        )
    lines += ["", "**Throughput** (one `python -m scorer` draining the pre-filled topic):", ""]
    lines += [
        "| run | steady tx/s (10-90 %) | whole drain tx/s | scorer CPU µs/tx | "
        "CPU scorer / Kafka / Redis | peak RSS | load avg; other work |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in results.get("throughput", {}).items():
        wall = max(run["wall_s"], 1e-9)
        shares = [run["scorer_cpu_s"] / wall] + [
            run["neighbours_cpu_s"].get(n, float("nan")) / wall for n in ("kafka", "redis")
        ]
        lines.append(
            f"| {name} | {run['steady_tx_s']:,} | {run['overall_tx_s']:,} | "
            f"{run['scorer_cpu_us_per_tx']} | {' / '.join(f'{v:.0%}' for v in shares)} | "
            f"{run['peak_rss_bytes'] / 2**20:,.0f} MB | "
            f"{_load(run['machine'], run.get('others_cpu_cores'))} |"
        )
    lines += _latency_table(results)
    lines += _stages_table(results)
    lines += _memory_lines(results)
    return "\n".join(lines) + "\n"


def _latency_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "**End-to-end latency** (event time = send time of an open-loop producer in its own "
        "process → a `read_committed` consumer receives the score):",
        "",
        "| delivery | offered tx/s | achieved tx/s | p50 | p95 | p99 | p99.9 | max | "
        "p50 / p99 until produced | scorer CPU | load avg; other work |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, run in results.get("latency", {}).items():
        for lv in run["levels"]:
            cells = [_num(lv.get(k), " ms", 1) for k in ("p50_ms", "p95_ms", "p99_ms", "p99.9_ms")]
            produced = lv.get("until_produce") or {}
            split = (
                f"{_num(produced.get('p50_ms'), '', 1)} / {_num(produced.get('p99_ms'), ' ms', 1)}"
            )
            lines.append(
                f"| {mode} | {lv['offered_tx_s']:,} | {lv['achieved_tx_s']:,.0f} | "
                + " | ".join(cells)
                + f" | {_num(lv.get('max_ms'), ' ms', 0)} | {split} "
                f"| {lv.get('scorer_cpu_share', 0):.0%} | "
                f"{_load(lv['machine'], lv.get('others_cpu_cores'))} |"
            )
    lines += [
        "",
        "Per micro-batch inside the scorer during those windows (ms; `commit` excludes `produce`):",
        "",
        "| delivery | offered tx/s | batches | mean size | decode | features | model | produce "
        "| commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, run in results.get("latency", {}).items():
        for lv in run["levels"]:
            b = lv.get("batch") or {}
            if not b:
                continue
            commit = b["commit_ms"] - b["produce_ms"]
            lines.append(
                f"| {mode} | {lv['offered_tx_s']:,} | {b['batches']:,} | {b['mean_size']} | "
                f"{b['decode_ms']} | {b['features_ms']} | {b['model_ms']} | {b['produce_ms']} | "
                f"{commit:.2f} |"
            )
    return lines


def _stages_table(results: dict[str, Any]) -> list[str]:
    main = results.get("throughput", {}).get("exactly_once")
    naive = results.get("naive")
    if not main:
        return []
    stages = main["stages_us_per_tx"]
    evalsha = main["redis_evalsha"]
    # Redis's own CPU (INFO cpu) over the drain: its command statistics count a command a
    # script runs as well as the script, so adding them up would count those twice.
    per_tx_redis = evalsha["redis_cpu_s"] * 1e6 / max(main["transactions"], 1)
    lines = [
        "",
        "**Where the time goes** (µs per transaction, wall time inside the scorer's loop; "
        "`model` includes building the output messages, `commit` excludes `produce`):",
        "",
        "| stage | scorer (exactly-once drain) | naive baseline |",
        "|---|---|---|",
    ]
    naive_stages = (naive or {}).get("stages_us_per_tx", {})
    for stage in ("decode", "features", "model", "produce", "commit"):
        value = stages.get(stage, 0.0)
        if stage == "commit":
            value = round(value - stages.get("produce", 0.0), 1)
        lines.append(f"| {stage} | {value} | {naive_stages.get(stage, '')} |")
    lines.append(
        f"| (Redis CPU during the drain, per transaction) | {per_tx_redis:.1f} "
        f"({evalsha['calls']:,} script calls, {evalsha['usec_per_call']} µs each) | |"
    )
    return lines


def _memory_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "**Redis memory** (`MEMORY USAGE` of every state key after the replay):", ""]
    lines += [
        "| input | cards | user key mean | user key p95 | merchant key mean | per active user |",
        "|---|---|---|---|---|---|",
    ]
    for name, mem in results.get("memory", {}).items():
        if not mem.get("users"):
            continue
        lines.append(
            f"| {name} | {mem['users']:,} | {mem['user_key_mean_bytes']:,} B | "
            f"{mem['user_key_p95_bytes']:,} B | {mem['merchant_key_mean_bytes']:,} B | "
            f"{mem['bytes_per_active_user']:,} B |"
        )
    return lines


def plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"exactly_once": "-", "at_least_once": "--"}
    for mode, run in results.get("latency", {}).items():
        levels = run["levels"]
        offered = [lv["offered_tx_s"] for lv in levels]
        for key, marker in (("p50_ms", "o"), ("p95_ms", "s"), ("p99_ms", "^")):
            values = [lv.get(key) for lv in levels]
            values = [v if v is not None and math.isfinite(v) else float("nan") for v in values]
            ax.plot(
                offered,
                values,
                styles.get(mode, ":"),
                marker=marker,
                label=f"{key[:-3]} {mode.replace('_', '-')}",
            )
    ax.axhline(TARGET_P99_MS[5000], color="grey", linewidth=0.8, linestyle=":", label="p99 goal")
    ax.set_xlabel("offered load (transactions/s, open loop)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"One scorer process, {results['machine']['cores']} cores, {results['started']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(summary: str, readme: Path = README) -> None:
    """Replace the results section of bench/README.md with `summary`."""
    text = readme.read_text() if readme.exists() else f"{START}\n{END}\n"
    block = f"{START}\n{summary}{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)
