"""End-to-end latency at fixed offered loads: the open-loop producer (bench.loadgen, its
own process) writes transactions whose event time is their send time; a read_committed
consumer here receives the committed scores. Latency = receive time - event time, so it
covers the producer, Kafka, the scorer's batch, features, model and the transaction
commit, and the consumer's fetch.
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer

from bench.deployment import Deployment, ServiceProcess
from bench.machine import LoadMonitor, Proc, busy_cpu_seconds, neighbour_procs
from bench.redisstats import server_stats
from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT
from scorer.metrics import STAGES

logger = logging.getLogger(__name__)
PERCENTILES = (50, 95, 99, 99.9)
# After the producer stops, how long the scores may take to all arrive.
DRAIN_GRACE_S = 60.0
_EVENT_TIME = b'"event_time":"'


def event_time(value: bytes) -> float:
    """The event time of a score message, without parsing the whole JSON (the features
    make it ~1.5 KB; the measuring process must stay cheap: ~2 µs per score)."""
    start = value.index(_EVENT_TIME) + len(_EVENT_TIME)
    stamp = value[start : value.index(b'"', start)].decode()
    return datetime.fromisoformat(stamp).timestamp()


class ScoreReader:
    """A read_committed consumer of the scores topic that timestamps each arrival."""

    def __init__(self, kafka: dict[str, Any], topic: str) -> None:
        self.consumer = Consumer(
            {
                **kafka,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # A read_committed fetch that waits is answered as soon as a transaction
                # commit moves the last stable offset (the commit markers' append wakes it),
                # so a long wait adds no delay; a 5 ms wait cost ~100 empty fetch
                # requests/s at the broker and ~2x the reader's CPU per score (measured,
                # same latency percentiles).
                "fetch.wait.max.ms": 500,
            }
        )
        self.consumer.subscribe([topic])
        self.event: list[float] = []
        self.latency: list[float] = []
        # Event time -> the score's Kafka timestamp (set when the scorer produced it, before
        # its commit): where the latency goes, before and after the scorer's produce.
        self.to_produce: list[float] = []

    def poll(self, seconds: float) -> int:
        """Read for up to `seconds`; returns how many scores arrived."""
        got = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            # consume(n, timeout) blocks until it has n messages or the timeout ends, so a
            # batch read would add up to its timeout to every latency: wait for one
            # message, stamp the arrival, then take what else is already here.
            first = self.consumer.consume(1, 0.05)
            received = time.time()
            if not first:
                continue
            for msg in first + self.consumer.consume(5000, 0):
                if msg.error():
                    continue
                value = msg.value()
                if not value:
                    continue
                sent = event_time(value)
                self.event.append(sent)
                self.latency.append(received - sent)
                self.to_produce.append(msg.timestamp()[1] / 1000 - sent)
                got += 1
        return got

    def close(self) -> None:
        self.consumer.close()


def in_window(event: np.ndarray, window_start_us: int) -> np.ndarray:
    """Which event times (epoch seconds, parsed from microsecond stamps) fall in the
    window the load generator counted (stamp >= its start, in integer microseconds)."""
    return np.rint(event * 1e6).astype(np.int64) >= window_start_us


def summarise(latency: np.ndarray) -> dict[str, float]:
    if latency.size == 0:
        return {}
    out = {
        f"p{p:g}_ms": round(float(np.percentile(latency, p, method="higher")) * 1000, 1)
        for p in PERCENTILES
    }
    out["max_ms"] = round(float(latency.max()) * 1000, 1)
    out["mean_ms"] = round(float(latency.mean()) * 1000, 1)
    return out


def per_second(offset_s: np.ndarray, latency: np.ndarray) -> list[list[float]]:
    """[second of the window, scores, p50 ms, p99 ms] by event time: shows whether the
    tail is spread out or comes in bursts (and when)."""
    out: list[list[float]] = []
    if offset_s.size == 0:
        return out
    seconds = np.floor(offset_s).astype(np.int64)
    for second in np.unique(seconds):
        values = latency[seconds == second] * 1000
        p50, p99 = np.percentile(values, [50, 99], method="higher")
        out.append([int(second), int(values.size), round(float(p50), 1), round(float(p99), 1)])
    return out


def per_batch(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean batch size and milliseconds per batch in each stage between two scrapes."""
    count = after.get("scorer_batch_size_count", 0.0) - before.get("scorer_batch_size_count", 0.0)
    if count <= 0:
        return {}
    size = after.get("scorer_batch_size_sum", 0.0) - before.get("scorer_batch_size_sum", 0.0)
    out = {"batches": int(count), "mean_size": round(size / count, 1)}
    for stage in STAGES:
        key = f'scorer_stage_seconds_sum{{stage="{stage}"}}'
        spent = after.get(key, 0.0) - before.get(key, 0.0)
        out[f"{stage}_ms"] = round(spent / count * 1000, 2)
        # Batches that spent over 50 ms in this stage: where a latency tail comes from.
        within = f'scorer_stage_seconds_bucket{{le="0.05",stage="{stage}"}}'
        # (The two scrapes can split a batch's stages: clamp at 0.)
        slow = count - (after.get(within, 0.0) - before.get(within, 0.0))
        out[f"{stage}_over_50ms"] = max(0, int(slow))
    return out


def start_loadgen(
    world: Deployment, rate: int, warmup_s: float, measure_s: float, users: int, merchants: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "bench.loadgen",
            "--bootstrap", world.stack.kafka_bootstrap, "--topic", world.transactions,
            "--rate", str(rate), "--seconds", str(warmup_s + measure_s),
            "--warmup", str(warmup_s), "--users", str(users), "--merchants", str(merchants),
            "--tag", f"{rate}-{uuid.uuid4().hex[:6]}",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )  # fmt: skip


def one_level(
    world: Deployment,
    scorer: ServiceProcess,
    reader: ScoreReader,
    monitor: LoadMonitor,
    rate: int,
    warmup_s: float,
    measure_s: float,
    users: int,
    merchants: int,
) -> dict[str, Any]:
    # The reader stamps arrivals in this process, which holds matplotlib, scikit-learn,
    # MLflow...: a full garbage collection walking all of that would stall it and show up
    # as latency. Keep it away from what is already here.
    gc.collect()
    gc.freeze()
    proc = Proc(scorer.proc.pid)
    redis_before = server_stats(world.stack.redis_url)
    reader.event.clear()
    reader.latency.clear()
    reader.to_produce.clear()
    loadgen = start_loadgen(world, rate, warmup_s, measure_s, users, merchants)
    cpu_at_window: float | None = None
    window_wall: float | None = None
    metrics_at_window: dict[str, float] = {}
    neighbours = neighbour_procs(world.stack)
    busy_at_window = own_at_window = 0.0
    neighbours_at_window: dict[str, float] = {}
    started = time.time()
    while loadgen.poll() is None:
        reader.poll(0.2)
        if cpu_at_window is None and time.time() - started >= warmup_s:
            cpu_at_window, window_wall = proc.cpu_seconds(), time.time()
            metrics_at_window = scorer.metrics()
            busy_at_window, own_at_window = busy_cpu_seconds(), time.process_time()
            neighbours_at_window = {n: p.cpu_seconds() for n, p in neighbours.items()}
    out, _ = loadgen.communicate()
    if loadgen.returncode != 0:
        raise RuntimeError(f"load generator failed ({loadgen.returncode}) at {rate}/s")
    sent_info = orjson.loads(out.splitlines()[-1])
    cpu_end, wall_end = proc.cpu_seconds(), time.time()
    busy_end, own_end = busy_cpu_seconds(), time.process_time()
    neighbours_end = {n: p.cpu_seconds() for n, p in neighbours.items()}
    batches = per_batch(metrics_at_window, scorer.metrics())
    # Everything sent must come back; how long that takes is part of the result.
    deadline = time.monotonic() + DRAIN_GRACE_S
    while len(reader.event) < sent_info["sent"] and time.monotonic() < deadline:
        reader.poll(0.5)
    event = np.array(reader.event)
    latency = np.array(reader.latency)
    window = in_window(event, sent_info["window_start_us"])
    # A score that never came counts as infinitely late, so a scorer that falls behind
    # cannot look fast by leaving its slowest messages out.
    missing = max(0, sent_info["in_window"] - int(window.sum()))
    measured = np.concatenate([latency[window], np.full(missing, np.inf)])
    result: dict[str, Any] = {
        "offered_tx_s": rate,
        "achieved_tx_s": sent_info["achieved_tx_s"],
        "sent": sent_info["sent"],
        "scored": int(event.size),
        "window_s": measure_s,
        "window_scored": int(window.sum()),
        "window_missing": missing,
        "loadgen_max_behind_s": sent_info["max_behind_s"],
        "batch": batches,
        **summarise(measured),
        # The part of the latency before the scorer produced the score (the rest is the
        # Kafka commit and the reader's fetch).
        "until_produce": summarise(np.array(reader.to_produce)[window]),
        "per_second": per_second(
            event[window] - sent_info["window_start_us"] / 1e6, latency[window]
        ),
        "redis_aof_rewrites": server_stats(world.stack.redis_url)["aof_rewrites"]
        - redis_before["aof_rewrites"],
        "machine": monitor.between(window_wall or started, wall_end),
    }
    if cpu_at_window is not None and window_wall is not None:
        span = max(wall_end - window_wall, 1e-9)
        scorer_cpu = cpu_end - cpu_at_window
        result["scorer_cpu_share"] = round(scorer_cpu / span, 2)
        result["neighbours_cpu_share"] = {
            n: round((neighbours_end[n] - neighbours_at_window[n]) / span, 2) for n in neighbours
        }
        # The load generator's CPU is counted over its whole run (it reports its own).
        loadgen_share = sent_info["cpu_s"] / max(sent_info["ended"] - sent_info["started"], 1e-9)
        others = (
            busy_end - busy_at_window - scorer_cpu - (own_end - own_at_window)
            - sum(neighbours_end[n] - neighbours_at_window[n] for n in neighbours)
        ) / span - loadgen_share  # fmt: skip
        result["loadgen_cpu_share"] = round(loadgen_share, 2)
        result["others_cpu_cores"] = round(max(0.0, others), 2)
    result.update(proc.memory())
    logger.info(
        "load level done %s",
        kv(offered=rate, achieved=result["achieved_tx_s"], p99_ms=result.get("p99_ms"),
           scored=result["scored"], sent=result["sent"], load=result["machine"]["load1_mean"]),
    )  # fmt: skip
    return result


def levels(
    world: Deployment,
    label: str,
    rates: tuple[int, ...],
    warmup_s: float,
    measure_s: float,
    users: int,
    merchants: int,
    monitor: LoadMonitor,
    settle: Callable[[], None],
    **env: str,
) -> dict[str, Any]:
    """One scorer, the offered loads in turn (state carries over, as in production);
    `settle` runs before each level (waiting for a quieter machine)."""
    scorer = world.sibling(label).start_scorer(label, env=env)
    reader = ScoreReader(world.kafka, world.scores)
    try:
        ready_s = scorer.wait_ready()
        reader.poll(2.0)  # join the group before the first message is sent
        results = []
        for rate in rates:
            settle()
            results.append(
                one_level(
                    world, scorer, reader, monitor, rate, warmup_s, measure_s, users, merchants
                )
            )
    finally:
        reader.close()
        code = scorer.stop()
        if code != 0:
            logger.warning("scorer exit code %s", kv(label=label, code=code, log=scorer.log))
    return {"label": label, "env": env, "ready_s": round(ready_s, 1), "levels": results}
