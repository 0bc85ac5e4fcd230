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
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from bench.data import Population
from fraudcore.kafka import producer_config

CHUNK = 1024
# Messages serialised ahead of the send loop (a few seconds at 10,000/s would be 4x this).
AHEAD = 8 * CHUNK
MIN_SLEEP_S = 0.001
# Stands in for the timestamp while the record is serialised ahead of time.
_PLACEHOLDER = "@send-time@"


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


def serialised(records: Iterator[dict[str, Any]]) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(value before the timestamp, value after it, key) per record: the JSON is built
    ahead of the clock, and at send time only the timestamp's bytes go between the two."""
    for record in records:
        record["timestamp"] = _PLACEHOLDER
        value = orjson.dumps(record)
        cut = value.index(_PLACEHOLDER.encode())
        yield value[:cut], value[cut + len(_PLACEHOLDER) :], record["user_id"].encode()


class SendClock:
    """RFC 3339 UTC stamps with microseconds, from one integer clock reading; the
    date-time part is formatted once per second (datetime per message cost ~2 µs)."""

    def __init__(self) -> None:
        self._second = -1
        self._head = b""

    def stamp(self, micros: int) -> bytes:
        second, fraction = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._head = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
        return b"%s.%06dZ" % (self._head, fraction)


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
    messages = serialised(
        transactions(Population(users, merchants, seed), np.random.default_rng(seed), tag)
    )
    ready: deque[tuple[bytes, bytes, bytes]] = deque(islice(messages, AHEAD))
    clock = SendClock()
    total = int(rate * seconds)
    in_window = 0
    behind_max = 0.0
    cpu_start = time.process_time()
    started_ns = time.time_ns()
    window_us = started_ns // 1000 + int(warmup_s * 1e6)
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter() - t0
        due = min(total, int(now * rate) + 1)
        behind_max = max(behind_max, (due - sent) / rate)
        while sent < due:
            if not ready:  # far behind (a stalled process): build in the loop after all
                ready.extend(islice(messages, CHUNK))
            head, tail, key = ready.popleft()
            micros = time.time_ns() // 1000
            value = head + clock.stamp(micros) + tail
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.01)
            if micros >= window_us:
                in_window += 1
            sent += 1
        producer.poll(0)
        # Refill in the slack between sends, never while messages are due.
        if len(ready) < AHEAD // 2:
            ready.extend(islice(messages, CHUNK))
        wait = t0 + sent / rate - time.perf_counter()
        if wait > 0:
            # At least MIN_SLEEP_S: at 5,000/s a wake-up per message costs more CPU than
            # sending it. Stamps stay exact send times; the schedule slips < 1 ms.
            time.sleep(max(wait, MIN_SLEEP_S))
    ended_wall = time.time()
    cpu_loop = time.process_time() - cpu_start
    undelivered = producer.flush(60)
    started_wall = started_ns / 1e9
    measured = max(ended_wall - started_wall - warmup_s, 1e-9)
    return {
        "sent": sent,
        "undelivered": undelivered,
        "started": started_wall,
        "ended": ended_wall,
        # In whole microseconds, as the stamps are: a float start carrying the clock's
        # nanoseconds put a message stamped in its first microsecond on both sides.
        "window_start_us": window_us,
        "in_window": in_window,
        "achieved_tx_s": round(in_window / measured, 1),
        "max_behind_s": round(behind_max, 3),
        "cpu_s": round(time.process_time(), 2),
        # CPU of the send loop alone (all threads, librdkafka's included), per message.
        "loop_cpu_us_per_msg": round(cpu_loop / max(sent, 1) * 1e6, 1),
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
