"""Benchmark input: the Fraud Detection Handbook's simulated transactions, and a synthetic
population for the open-loop load.

The handbook (5,000 cards, 10,000 terminals, ~2 transactions per card a day) has no
location, country or device. `Population` gives every card a home country and place and
one or two devices, every terminal a category and channel, and a few transactions a trip
abroad or an unknown device, so that every feature of the scorer has work to do. With
`enrich=False` the handbook columns go through as they are (the lead's memory figure was
measured that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fraudcore.settings import REPO_ROOT

HANDBOOK = REPO_ROOT.parent / "shared" / "datasets" / "fraud-handbook" / "transactions.csv.gz"
# Home countries with a rough centre; a card lives within a couple of degrees of it.
COUNTRIES: tuple[tuple[str, float, float], ...] = (
    ("DE", 51.2, 10.4), ("FR", 46.6, 2.4), ("GB", 53.0, -1.5), ("IT", 42.8, 12.6),
    ("ES", 40.2, -3.6), ("PL", 52.1, 19.4), ("NL", 52.2, 5.5), ("BE", 50.6, 4.6),
    ("PT", 39.6, -8.0), ("US", 39.8, -98.6), ("BR", -14.2, -51.9), ("TR", 39.0, 35.2),
)  # fmt: skip
CATEGORIES = ("grocery", "restaurant", "fuel", "retail", "electronics", "travel", "health")
CHANNELS = ("pos", "contactless", "online", "atm")
TRAVEL_SHARE = 0.02  # transactions made abroad
SECOND_DEVICE_SHARE = 0.15
UNKNOWN_DEVICE_SHARE = 0.005


def rfc3339(epoch_s: float) -> str:
    """UTC with microseconds: the open-loop producer's send time, exactly."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


class Population:
    """Stable attributes of `users` cards and `merchants` terminals for a seed."""

    def __init__(self, users: int, merchants: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.users = users
        self.merchants = merchants
        self.home = rng.integers(0, len(COUNTRIES), users)
        centres = np.array([(lat, lon) for _, lat, lon in COUNTRIES])
        self.home_lat = centres[self.home, 0] + rng.normal(0, 1.5, users)
        self.home_lon = centres[self.home, 1] + rng.normal(0, 1.5, users)
        self.category = rng.integers(0, len(CATEGORIES), merchants)
        self.channel = rng.integers(0, len(CHANNELS), merchants)

    def records(
        self,
        rng: np.random.Generator,
        txids: list[str],
        users: np.ndarray,
        merchants: np.ndarray,
        amounts: np.ndarray,
        stamps: list[str],
    ) -> list[dict[str, Any]]:
        """Transaction records (the contract's fields) for aligned columns."""
        n = len(txids)
        users = np.asarray(users)
        merchants = np.asarray(merchants)
        centres = np.array([(lat, lon) for _, lat, lon in COUNTRIES])
        travel = rng.random(n) < TRAVEL_SHARE
        abroad = rng.integers(0, len(COUNTRIES), n)
        country = np.where(travel, abroad, self.home[users])
        jitter = rng.normal(0, 0.05, (n, 2))
        far = centres[abroad] + rng.normal(0, 1.0, (n, 2))
        lat = np.where(travel, far[:, 0], self.home_lat[users] + jitter[:, 0])
        lon = np.where(travel, far[:, 1], self.home_lon[users] + jitter[:, 1])
        lat = np.round(np.clip(lat, -89.9, 89.9), 4).tolist()
        lon = np.round(np.clip(lon, -179.9, 179.9), 4).tolist()
        draw = rng.random(n).tolist()
        codes = [COUNTRIES[c][0] for c in country.tolist()]
        categories = [CATEGORIES[c] for c in self.category[merchants].tolist()]
        channels = [CHANNELS[c] for c in self.channel[merchants].tolist()]
        amount_list = np.asarray(amounts, dtype=float).tolist()
        out = []
        for i, (u, m) in enumerate(zip(users.tolist(), merchants.tolist(), strict=True)):
            if draw[i] < UNKNOWN_DEVICE_SHARE:
                device = f"dev-{u}-{txids[i]}"
            elif draw[i] < SECOND_DEVICE_SHARE:
                device = f"dev-{u}-b"
            else:
                device = f"dev-{u}-a"
            out.append(
                {
                    "schema_version": 1,
                    "transaction_id": txids[i],
                    "user_id": f"c{u}",
                    "merchant_id": f"t{m}",
                    "amount": amount_list[i],
                    "currency": "EUR",
                    "timestamp": stamps[i],
                    "merchant_category": categories[i],
                    "channel": channels[i],
                    "country": codes[i],
                    "lat": lat[i],
                    "lon": lon[i],
                    "device_id": device,
                }
            )
        return out


@dataclass(frozen=True)
class Slice:
    """Time-ordered transactions of a period, with the handbook's ground truth."""

    records: list[dict[str, Any]]
    event_ts: np.ndarray
    fraud: np.ndarray
    source: str

    @property
    def users(self) -> int:
        return len({r["user_id"] for r in self.records})

    def encoded(self) -> list[tuple[bytes, bytes]]:
        """(key, value) pairs as the transactions topic carries them."""
        return [(r["user_id"].encode(), orjson.dumps(r)) for r in self.records]


def handbook_slice(
    start: str,
    days: int,
    *,
    path: Path = HANDBOOK,
    limit: int | None = None,
    enrich: bool = True,
    seed: int = 11,
) -> Slice:
    """`days` days of the handbook from `start` (YYYY-MM-DD), in event-time order."""
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    end = begin + timedelta(days=days)
    frame = _handbook(path)
    stamps = frame["TX_DATETIME"]
    frame = frame[(stamps >= begin.strftime("%Y-%m-%d")) & (stamps < end.strftime("%Y-%m-%d"))]
    if limit is not None:
        frame = frame.head(limit)
    iso = [s.replace(" ", "T") + "Z" for s in frame["TX_DATETIME"]]
    event_ts = np.array([t[:-1] for t in iso], dtype="datetime64[ms]").astype(np.int64) / 1e3
    txids = [f"hb{t}" for t in frame["TRANSACTION_ID"]]
    users = frame["CUSTOMER_ID"].to_numpy()
    merchants = frame["TERMINAL_ID"].to_numpy()
    amounts = frame["TX_AMOUNT"].to_numpy()
    if enrich:
        population = Population(int(users.max()) + 1, int(merchants.max()) + 1, seed)
        rng = np.random.default_rng(seed)
        records = population.records(rng, txids, users, merchants, amounts, iso)
    else:
        records = [
            {
                "schema_version": 1,
                "transaction_id": txids[i],
                "user_id": f"c{users[i]}",
                "merchant_id": f"t{merchants[i]}",
                "amount": float(amounts[i]),
                "timestamp": iso[i],
            }
            for i in range(len(txids))
        ]
    kind = "handbook+enriched" if enrich else "handbook"
    return Slice(records, event_ts, frame["TX_FRAUD"].to_numpy(), f"{kind} {start} +{days}d")


@cache
def _handbook(path: Path) -> Any:
    import pandas as pd

    columns = [
        "TRANSACTION_ID",
        "TX_DATETIME",
        "CUSTOMER_ID",
        "TERMINAL_ID",
        "TX_AMOUNT",
        "TX_FRAUD",
    ]
    return pd.read_csv(path, usecols=columns)


def synthetic_slice(
    start: str,
    days: int,
    *,
    users: int = 5000,
    per_user_day: float = 2.0,
    seed: int = 11,
    limit: int | None = None,
) -> Slice:
    """A handbook-shaped stream (the first `limit` of it) when the file is not there."""
    rng = np.random.default_rng(seed)
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()
    n = int(users * per_user_day * days)
    event_ts = np.sort(begin + rng.random(n) * days * 86400)[:limit]
    n = len(event_ts)
    population = Population(users, users * 2, seed)
    records = population.records(
        rng,
        [f"sy{i}" for i in range(n)],
        rng.integers(0, users, n),
        rng.integers(0, users * 2, n),
        np.round(rng.lognormal(3.8, 0.9, n), 2),
        [rfc3339(t) for t in event_ts],
    )
    return Slice(records, event_ts, np.zeros(n, dtype=int), f"synthetic {start} +{days}d")


def month(
    start: str,
    days: int,
    *,
    limit: int | None = None,
    enrich: bool = True,
    seed: int = 11,
    source: str = "handbook",
) -> Slice:
    """The handbook slice, or a synthetic one of the same shape if the file is missing."""
    if source == "handbook" and HANDBOOK.exists():
        return handbook_slice(start, days, limit=limit, enrich=enrich, seed=seed)
    s = synthetic_slice(start, days, seed=seed, limit=limit)
    keep = slice(0, limit)
    records = s.records[keep]
    if not enrich:
        core = ("schema_version", "transaction_id", "user_id", "merchant_id", "amount", "timestamp")
        records = [{k: r[k] for k in core} for r in records]
    return Slice(records, s.event_ts[keep], s.fraud[keep], s.source)
