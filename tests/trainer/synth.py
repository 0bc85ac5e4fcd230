"""Small synthetic data for the trainer's tests: a card stream with labelled fraud (Kafka),
and a file in the handbook's format (handbook_file).

The stream is kept here (not imported from producer/): users spend around a personal mean
at a few merchants from one device and country; some cards get compromised (bursts of large
amounts from a new device and country far away) and two merchants get compromised (every
transaction there is fraud for a few days). Every fraud gets a label `delay_s` after the
transaction; half of the legit transactions get a legit label.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Producer

from fraudcore.contracts import format_time

DAY_S = 86_400.0


@dataclass
class Stream:
    transactions: list[tuple[dict[str, Any], float]]  # (record, event_ts), time ordered
    labels: list[dict[str, Any]]


def make_stream(
    *,
    seed: int,
    prefix: str,
    start_ts: float,
    days: int = 10,
    users: int = 150,
    merchants: int = 40,
    per_day: float = 2.0,
    delay_s: float = DAY_S,
) -> Stream:
    rng = random.Random(seed)
    profiles: list[dict[str, Any]] = []
    for u in range(users):
        profiles.append({
            "user_id": f"{prefix}-u{u}",
            "mean": rng.uniform(10, 80),
            "device": f"{prefix}-d{u}",
            "lat": rng.uniform(47, 54),
            "lon": rng.uniform(6, 14),
            "shops": [f"{prefix}-m{rng.randrange(merchants)}" for _ in range(4)],
        })  # fmt: skip
    compromised_cards = {p["user_id"]: rng.uniform(3, days - 1) for p in rng.sample(profiles, 15)}
    bad_shops = {f"{prefix}-m0", f"{prefix}-m1"}
    bad_from, bad_to = start_ts + 4 * DAY_S, start_ts + 8 * DAY_S
    rows: list[tuple[dict[str, Any], float, str | None]] = []
    counter = 0

    def add(record: dict[str, Any], ts: float, scenario: str | None) -> None:
        nonlocal counter
        counter += 1
        record.update(schema_version=1, transaction_id=f"{prefix}-t{counter}",
                      timestamp=format_time(ts), currency="EUR", channel="pos")  # fmt: skip
        rows.append((record, round(ts, 3), scenario))

    for p in profiles:
        for day in range(days):
            for _ in range(rng.randint(0, int(2 * per_day))):
                ts = start_ts + (day + rng.random()) * DAY_S
                shop = rng.choice(p["shops"])
                amount = round(max(1.0, rng.gauss(p["mean"], p["mean"] / 4)), 2)
                scenario = (
                    "compromised_terminal"
                    if shop in bad_shops and bad_from <= ts < bad_to
                    else None
                )
                add({"user_id": p["user_id"], "merchant_id": shop, "amount": amount,
                     "country": "DE", "device_id": p["device"],
                     "lat": round(p["lat"], 4), "lon": round(p["lon"], 4)}, ts, scenario)  # fmt: skip
        hit = compromised_cards.get(p["user_id"])
        if hit is not None:
            for k in range(rng.randint(3, 6)):
                ts = start_ts + hit * DAY_S + k * rng.uniform(60, 900)
                add({"user_id": p["user_id"], "merchant_id": f"{prefix}-m{rng.randrange(merchants)}",
                     "amount": round(p["mean"] * rng.uniform(6, 12), 2), "country": "BR",
                     "device_id": f"{prefix}-evil{k}", "lat": -23.5, "lon": -46.6},
                    ts, "compromised_card")  # fmt: skip
    rows.sort(key=lambda r: r[1])
    labels = []
    for record, ts, scenario in rows:
        if scenario is None and rng.random() < 0.5:
            continue
        label = {
            "schema_version": 1, "transaction_id": record["transaction_id"],
            "user_id": record["user_id"], "merchant_id": record["merchant_id"],
            "label": "legit" if scenario is None else "fraud", "source": "simulator",
            "available_at": format_time(ts + delay_s), "transaction_time": record["timestamp"],
        }  # fmt: skip
        if scenario is not None:
            label["scenario"] = scenario
        labels.append(label)
    return Stream([(r, ts) for r, ts, _ in rows], labels)


def produce(config: dict[str, Any], topic: str, items: Iterable[tuple[str, bytes]]) -> int:
    producer = Producer({**config, "linger.ms": 5})
    count = 0
    for key, value in items:
        producer.produce(topic, key=key.encode(), value=value)
        count += 1
        if count % 5000 == 0:
            producer.flush()
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered to {topic}"
    return count


def handbook_file(path: Path, days: int = 71) -> Path:
    """Handbook-format rows for `days` from 06-10 (71: to 08-20, more than the ch. 3 recipe
    reads): 80 customers, 30 terminals; 3 % of transactions are frauds of more than 220
    (the book's scenario 1)."""
    rng = np.random.default_rng(11)
    start = pd.Timestamp("2018-06-10")
    n = 80 * 2 * days
    seconds = np.sort(rng.integers(0, days * 86_400, n))
    fraud = rng.random(n) < 0.03
    amount = np.where(fraud, rng.uniform(221, 400, n), rng.uniform(1, 200, n)).round(2)
    times = start + pd.to_timedelta(seconds, unit="s")
    pd.DataFrame({
        "TRANSACTION_ID": np.arange(n),
        "TX_DATETIME": times.strftime("%Y-%m-%d %H:%M:%S"),
        "CUSTOMER_ID": rng.integers(0, 80, n),
        "TERMINAL_ID": rng.integers(0, 30, n),
        "TX_AMOUNT": amount,
        "TX_TIME_SECONDS": seconds,
        "TX_TIME_DAYS": seconds // 86_400,
        "TX_FRAUD": fraud.astype(int),
        "TX_FRAUD_SCENARIO": fraud.astype(int),
    }).to_csv(path, index=False)  # fmt: skip
    return path
