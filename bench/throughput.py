"""Maximum sustained throughput of one scorer process: pre-fill the transactions topic,
start `python -m scorer`, and follow its committed count until it has drained the topic."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from confluent_kafka import Producer

from bench.deployment import Deployment
from bench.machine import LoadMonitor, Proc, busy_cpu_seconds, neighbour_procs
from bench.redisstats import delta, server_stats
from fraudcore.kafka import producer_config
from fraudcore.logs import kv
from scorer.metrics import STAGES

logger = logging.getLogger(__name__)
POLL_S = 0.2


def prefill(kafka: dict[str, Any], topic: str, pairs: list[tuple[bytes, bytes]]) -> float:
    """Produce every (key, value) and wait for all acknowledgements; returns seconds."""
    started = time.monotonic()
    producer = Producer(producer_config(kafka, **{"linger.ms": 20}))
    for key, value in pairs:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"pre-filling {topic}: not every message was acknowledged")
    return time.monotonic() - started


def crossing(samples: np.ndarray, count: float) -> float:
    """Time at which the committed count reached `count` (linear between polls)."""
    times, counts = samples[:, 0], samples[:, 1]
    i = int(np.searchsorted(counts, count, side="left"))
    if i == 0:
        return float(times[0])
    if i >= len(counts):
        return float(times[-1])
    t0, t1, c0, c1 = times[i - 1], times[i], counts[i - 1], counts[i]
    return float(t0 + (t1 - t0) * (count - c0) / max(c1 - c0, 1e-9))


def rates(samples: np.ndarray, expected: int) -> dict[str, float]:
    """Whole drain (first to last commit) and steady state (10 % to 90 % of the input)."""
    scored = samples[:, 1]
    started = samples[int(np.argmax(scored > 0)), 0]  # first poll that saw a commit
    before = samples[max(0, int(np.argmax(scored > 0)) - 1), 0]
    first_commit = (started + before) / 2
    last_commit = crossing(samples, expected)
    t10, t90 = crossing(samples, 0.1 * expected), crossing(samples, 0.9 * expected)
    return {
        "drain_s": round(last_commit - first_commit, 2),
        "overall_tx_s": round(expected / max(last_commit - first_commit, 1e-9)),
        "steady_tx_s": round(0.8 * expected / max(t90 - t10, 1e-9)),
    }


def drain(
    world: Deployment,
    label: str,
    expected: int,
    monitor: LoadMonitor,
    timeout_s: float = 900.0,
    **env: str,
) -> dict[str, Any]:
    """Run one scorer over the pre-filled topic until `expected` transactions are committed."""
    scorer = world.sibling(label).start_scorer(label, env=env)
    try:
        ready_s = scorer.wait_ready()
        proc = Proc(scorer.proc.pid)
        neighbours = neighbour_procs(world.stack)
        neighbours_before = {name: p.cpu_seconds() for name, p in neighbours.items()}
        busy_before, own_before = busy_cpu_seconds(), time.process_time()
        redis_before = server_stats(world.stack.redis_url)
        # The scorer may commit its first batches between /ready and this line: CPU is
        # charged only to the transactions committed after this baseline.
        cpu_before, scored_before = proc.cpu_seconds(), scorer.scored()
        wall_start = time.time()
        samples: list[tuple[float, float, float]] = [(time.monotonic(), scored_before, cpu_before)]
        deadline = time.monotonic() + timeout_s
        scored = 0.0
        while scored < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {scored:.0f}/{expected} after {timeout_s:.0f}s")
            if scorer.proc.poll() is not None:
                raise RuntimeError(f"{label}: scorer exited\n{scorer.tail()}")
            scored = scorer.scored()
            samples.append((time.monotonic(), scored, proc.cpu_seconds()))
            time.sleep(POLL_S)
        wall_end = time.time()
        redis_after = server_stats(world.stack.redis_url)
        metrics = scorer.metrics()
        memory = proc.memory()
        cpu_s = samples[-1][2] - cpu_before
        measured_tx = samples[-1][1] - scored_before
        if measured_tx < expected / 2:
            raise RuntimeError(
                f"{label}: {scored_before:.0f} of {expected} were scored before measuring began;"
                " the drain is too short to measure (raise --drain-limit)"
            )
        neighbours_cpu = {
            name: round(p.cpu_seconds() - neighbours_before[name], 1)
            for name, p in neighbours.items()
        }
        # Whatever else ran on the machine meanwhile (other people's work), in cores.
        others = (
            busy_cpu_seconds() - busy_before - cpu_s - sum(neighbours_cpu.values())
            - (time.process_time() - own_before)
        )  # fmt: skip
    finally:
        code = scorer.stop()
        if code != 0:
            logger.warning("scorer exit code %s", kv(label=label, code=code, log=scorer.log))
    table = np.array([(t, c) for t, c, _ in samples])
    result: dict[str, Any] = {
        "label": label,
        "transactions": expected,
        "env": env,
        "ready_s": round(ready_s, 1),
        **rates(table, expected),
        "scorer_cpu_s": round(cpu_s, 3),
        "scorer_cpu_us_per_tx": round(cpu_s / measured_tx * 1e6, 1),
        # CPU seconds the broker and Redis used meanwhile (they share the machine).
        "neighbours_cpu_s": neighbours_cpu,
        "wall_s": round(wall_end - wall_start, 2),
        "others_cpu_cores": round(max(0.0, others) / max(wall_end - wall_start, 1e-9), 2),
        **memory,
        "stages_us_per_tx": stage_costs(metrics, expected),
        "batches": int(metrics.get("scorer_batch_size_count", 0)),
        # The feature path: merchant and user-write scripts; GETs (those the write script
        # runs included: Redis counts a command a script runs under its own name too).
        "redis_evalsha": delta(redis_before, redis_after, "evalsha"),
        "redis_get": delta(redis_before, redis_after, "get"),
        "machine": monitor.between(wall_start, wall_end),
    }
    logger.info(
        "drained %s",
        kv(label=label, steady=result["steady_tx_s"], overall=result["overall_tx_s"],
           load=result["machine"]["load1_mean"]),
    )  # fmt: skip
    return result


def stage_costs(metrics: dict[str, float], transactions: int) -> dict[str, float]:
    """Microseconds per transaction in each stage the scorer times (sum over batches)."""
    out = {}
    for stage in STAGES:
        total = metrics.get(f'scorer_stage_seconds_sum{{stage="{stage}"}}', 0.0)
        out[stage] = round(total / max(transactions, 1) * 1e6, 1)
    return out
