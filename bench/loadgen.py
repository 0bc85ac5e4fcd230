"""Open-loop, rate-limited transaction producer (`python -m bench.loadgen`), run as its own
process so it shares no GIL with the latency measurement.

Open loop: the schedule is fixed in advance (message i is due at start + i / rate) and
never waits for the system under test; a late process catches up in a burst. Each
transaction's event `timestamp` is the wall-clock time it was handed to the producer, in
microseconds, so a score's latency is its receive time minus its event time. Prints one
JSON line: how many were sent and the achieved rate in the measured window.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from bench.data import Population, rfc3339
from fraudcore.kafka import producer_config

CHUNK = 1024


def transactions(
    population: Population, rng: np.random.Generator, tag: str
) -> Iterator[dict[str, Any]]:
    """An endless stream of records without their timestamp (set at send time)."""
    seq = 0
    while True:
        users = rng.integers(0, population.users, CHUNK)
        merchants = rng.integers(0, population.merchants, CHUNK)
        amounts = np.round(rng.lognormal(3.8, 0.9, CHUNK), 2)
        txids = [f"lg{tag}-{seq + i}" for i in range(CHUNK)]
        seq += CHUNK
        yield from population.records(rng, txids, users, merchants, amounts, [""] * CHUNK)


def run(
    bootstrap: str,
    topic: str,
    rate: float,
    seconds: float,
    warmup_s: float,
    users: int,
    merchants: int,
    seed: int,
    tag: str,
) -> dict[str, Any]:
    # The stack's own producer settings (linger 5 ms): the broker sees the request rate a
    # real upstream producer causes, and its batching delay is part of the latency.
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    stream = transactions(Population(users, merchants, seed), np.random.default_rng(seed), tag)
    records = [next(stream) for _ in range(CHUNK)]  # build ahead of the clock
    total = int(rate * seconds)
    window_start = warmup_s
    in_window = 0
    behind_max = 0.0
    started_wall = time.time()
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter() - t0
        due = min(total, int(now * rate) + 1)
        behind_max = max(behind_max, (due - sent) / rate)
        while sent < due:
            if not records:
                records = [next(stream) for _ in range(CHUNK)]
            record = records.pop()
            stamp = time.time()
            record["timestamp"] = rfc3339(stamp)
            value = orjson.dumps(record)
            while True:
                try:
                    producer.produce(topic, value, record["user_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.01)
            if stamp - started_wall >= window_start:
                in_window += 1
            sent += 1
        producer.poll(0)
        wait = t0 + sent / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    ended_wall = time.time()
    undelivered = producer.flush(60)
    measured = max(ended_wall - started_wall - window_start, 1e-9)
    return {
        "sent": sent,
        "undelivered": undelivered,
        "started": started_wall,
        "ended": ended_wall,
        "window_start": started_wall + window_start,
        "in_window": in_window,
        "achieved_tx_s": round(in_window / measured, 1),
        "max_behind_s": round(behind_max, 3),
        "cpu_s": round(time.process_time(), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True, help="transactions per second")
    parser.add_argument("--seconds", type=float, required=True, help="total duration")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds before the window")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--merchants", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--tag", default="x", help="makes transaction ids unique")
    args = parser.parse_args(argv)
    result = run(
        args.bootstrap, args.topic, args.rate, args.seconds, args.warmup,
        args.users, args.merchants, args.seed, args.tag,
    )  # fmt: skip
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0 if result["undelivered"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
