"""The Fraud Detection Handbook's transaction simulator, regenerated with seeds of our own.

A port of the book's Chapter 3 "Transaction data simulator" (Le Borgne et al., *Reproducible
Machine Learning for Credit Card Fraud Detection — Practical Handbook*): customers and
terminals placed uniformly on a 100 x 100 grid, each customer using the terminals within a
radius of 5; per day a Poisson number of transactions around noon with a normal amount
around the customer's mean; then the three fraud scenarios (an amount over 220; two
terminals compromised each day for 28 days; three customers compromised each day for 14
days, a third of their transactions with the amount times 5).

Every random draw is made in the book's order from the book's generators (numpy's legacy
RandomState, Python's `random`, pandas' `sample`), so one seed is one dataset: `seed=0`
gives the book's published file row for row (1,754,155 transactions, 14,681 frauds; a test
compares them). The book's own seeds are `seed=0`: customers from state 0, terminals 1, customer c's transactions c,
day d's frauds d. Seed s shifts each of them by s * SEED_STRIDE, so seeds 100 and above
never share a generator state with the book's file, nor with each other (for up to 100,000
customers and days).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraudcore.logs import kv

logger = logging.getLogger(__name__)

SEED_STRIDE = 100_000
DAY_S = 86_400
# The order of the handbook file's columns.
COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)


@dataclass(frozen=True)
class World:
    """The book's published dataset is World(): 5,000 customers, 10,000 terminals, 183 days
    from 2018-04-01, a radius of 5."""

    customers: int = 5_000
    terminals: int = 10_000
    days: int = 183
    start: str = "2018-04-01"
    radius: float = 5.0


@dataclass(frozen=True)
class _Customer:
    customer_id: int
    x: float
    y: float
    mean_amount: float
    std_amount: float
    mean_tx_per_day: float


def _customers(count: int, state: int) -> list[_Customer]:
    draw = np.random.RandomState(state).uniform
    out = []
    for customer_id in range(count):
        x, y = draw(0, 100), draw(0, 100)
        mean_amount = draw(5, 100)
        out.append(_Customer(customer_id, x, y, mean_amount, mean_amount / 2, draw(0, 4)))
    return out


def _terminals(count: int, state: int) -> np.ndarray:
    draw = np.random.RandomState(state).uniform
    return np.array([(draw(0, 100), draw(0, 100)) for _ in range(count)], dtype=float)


Row = tuple[int, int, int, int, float]


def _transactions_of(customer: _Customer, terminals: list[int], days: int, state: int) -> list[Row]:
    """(seconds since the start, day, customer, terminal, amount) rows, in the book's order
    of draws: per day a Poisson count, per transaction a normal time of day (dropped outside
    the day), a normal amount (drawn again, uniform, when negative), a terminal."""
    numbers = np.random.RandomState(state)
    choices = random.Random(state)
    rows = []
    mean, std = customer.mean_amount, customer.std_amount
    for day in range(days):
        for _ in range(numbers.poisson(customer.mean_tx_per_day)):
            second = int(numbers.normal(DAY_S / 2, 20_000))
            if not 0 < second < DAY_S:
                continue
            amount = numbers.normal(mean, std)
            if amount < 0:
                amount = numbers.uniform(0, mean * 2)
            amount = float(np.round(amount, decimals=2))
            if terminals:
                terminal = choices.choice(terminals)
                rows.append((second + day * DAY_S, day, customer.customer_id, terminal, amount))
    return rows


def legitimate_transactions(world: World, seed: int) -> pd.DataFrame:
    """The transactions before any fraud, sorted by time and numbered."""
    base = seed * SEED_STRIDE
    customers = _customers(world.customers, base)
    places = _terminals(world.terminals, base + 1)
    rows: list[Row] = []
    for customer in customers:
        distance = np.sqrt(np.sum(np.square(np.array([customer.x, customer.y]) - places), axis=1))
        near = [int(t) for t in np.where(distance < world.radius)[0]]
        rows.extend(_transactions_of(customer, near, world.days, base + customer.customer_id))
    frame = pd.DataFrame(
        rows, columns=["TX_TIME_SECONDS", "TX_TIME_DAYS", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]
    )
    frame["TX_DATETIME"] = pd.to_datetime(frame["TX_TIME_SECONDS"], unit="s", origin=world.start)
    # The book's sort (pandas' default, numpy's quicksort, not stable): with it seed 0
    # numbers the transactions as the book's file does, ties in time included.
    frame = frame.sort_values("TX_DATETIME", ignore_index=True)
    frame.insert(0, "TRANSACTION_ID", np.arange(len(frame)))
    return frame


def add_frauds(frame: pd.DataFrame, world: World, seed: int) -> pd.DataFrame:
    """The book's three scenarios, each overwriting the one before where they meet."""
    base = seed * SEED_STRIDE
    frame["TX_FRAUD"] = 0
    frame["TX_FRAUD_SCENARIO"] = 0
    high = frame["TX_AMOUNT"] > 220
    frame.loc[high, "TX_FRAUD"] = 1
    frame.loc[high, "TX_FRAUD_SCENARIO"] = 1
    day = frame["TX_TIME_DAYS"]
    terminal_ids = pd.Series(np.arange(world.terminals))
    customer_ids = pd.Series(np.arange(world.customers))
    last_day = int(day.max())
    for d in range(last_day):
        terminals = terminal_ids.sample(n=2, random_state=base + d)
        hit = (day >= d) & (day < d + 28) & frame["TERMINAL_ID"].isin(terminals)
        frame.loc[hit, "TX_FRAUD"] = 1
        frame.loc[hit, "TX_FRAUD_SCENARIO"] = 2
    for d in range(last_day):
        customers = customer_ids.sample(n=3, random_state=base + d).to_numpy()
        candidates = frame.index[(day >= d) & (day < d + 14) & frame["CUSTOMER_ID"].isin(customers)]
        chosen = random.Random(base + d).sample(list(candidates), k=len(candidates) // 3)
        frame.loc[chosen, "TX_AMOUNT"] = frame.loc[chosen, "TX_AMOUNT"] * 5
        frame.loc[chosen, "TX_FRAUD"] = 1
        frame.loc[chosen, "TX_FRAUD_SCENARIO"] = 3
    return frame


def simulate(world: World, seed: int) -> pd.DataFrame:
    """One dataset of the book's simulator, in the handbook file's columns."""
    started = time.perf_counter()
    frame = legitimate_transactions(world, seed)
    frame = add_frauds(frame, world, seed)
    logger.info(
        "simulated handbook data %s",
        kv(
            seed=seed,
            transactions=len(frame),
            frauds=int(frame["TX_FRAUD"].sum()),
            seconds=round(time.perf_counter() - started, 1),
        ),
    )
    return frame[list(COLUMNS)]


def write(frame: pd.DataFrame, path: Path) -> Path:
    """As the handbook's file: CSV (gzip when the name ends in .gz), times to the second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    out["TX_DATETIME"] = out["TX_DATETIME"].dt.strftime("%Y-%m-%d %H:%M:%S")
    out.to_csv(path, index=False, float_format="%.2f")
    return path
