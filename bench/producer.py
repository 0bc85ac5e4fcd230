"""`python -m bench.producer`: how fast the simulator makes transactions, without Kafka.

Two figures: events generated per second, and per second including what the produce loop
adds before Kafka (JSON encoding and the contract checks of transaction and label). The
Kafka produce rate is measured with the CLI itself (see producer/README.md).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import orjson

from fraudcore.contracts import decode_label, decode_transaction
from producer.population import PopulationConfig, build_population
from producer.simulator import Simulator, TrafficConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--merchants", type=int, default=500)
    parser.add_argument("--fraud-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    began = time.perf_counter()
    pop = build_population(
        PopulationConfig(seed=args.seed, users=args.users, merchants=args.merchants)
    )
    population_s = time.perf_counter() - began
    start = time.time() - 400 * 86400.0  # far enough back for any --count

    def simulator() -> Simulator:
        return Simulator(pop, TrafficConfig(start=start, fraud_rate=args.fraud_rate))

    began = time.perf_counter()
    for _ in itertools.islice(simulator().events(), args.count):
        pass
    generate_s = time.perf_counter() - began

    began = time.perf_counter()
    for event in itertools.islice(simulator().events(), args.count):
        decode_transaction(orjson.dumps(event.tx))
        decode_label(orjson.dumps(event.label))
    checked_s = time.perf_counter() - began

    load = os.getloadavg()[0]
    print(f"population ({args.users} users, {args.merchants} merchants): {population_s:.2f} s")
    print(f"generate:                 {args.count / generate_s:>9,.0f} tx/s")
    print(f"generate + encode + check: {args.count / checked_s:>8,.0f} tx/s")
    print(f"load average (1 min) {load:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
