"""Synthetic transaction streams for scorer tests: small, seeded, with the awkward cases
(out-of-order events, missing optional fields, repeated devices and countries)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import numpy as np

from fraudcore.contracts import format_time
from fraudcore.features import TxnInput
from scorer.feature_store import FeatureStore, SourcePosition


def random_stream(
    seed: int,
    n: int,
    users: int = 20,
    merchants: int = 8,
    start: float = 1_780_000_000.0,
    mean_gap_s: float = 300.0,
) -> list[tuple[dict[str, Any], float]]:
    rng = random.Random(seed)
    tag = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    user_ids = [f"u-{tag}-{i}" for i in range(users)]
    merchant_ids = [f"m-{tag}-{i}" for i in range(merchants)]
    t = start
    out = []
    for i in range(n):
        t += rng.expovariate(1 / mean_gap_s)
        event_ts = round(t - (rng.uniform(0, 2000) if rng.random() < 0.1 else 0), 3)
        record: dict[str, Any] = {
            "schema_version": 1,
            "transaction_id": f"tx-{tag}-{i}",
            "user_id": rng.choice(user_ids),
            "merchant_id": rng.choice(merchant_ids),
            "amount": round(rng.lognormvariate(3, 1), 2),
            "timestamp": format_time(event_ts),
        }
        if rng.random() < 0.8:
            record["lat"] = round(rng.uniform(-60, 60), 4)
            record["lon"] = round(rng.uniform(-170, 170), 4)
        if rng.random() < 0.8:
            record["country"] = rng.choice(["FR", "DE", "US", "BR"])
        if rng.random() < 0.8:
            record["device_id"] = rng.choice(["d1", "d2", "d3", "d4", "d5"])
        # format_time keeps milliseconds: the event time the scorer sees is the parsed one
        out.append((record, _parsed(record["timestamp"])))
    return out


def _parsed(timestamp: str) -> float:
    from fraudcore.contracts import parse_time

    return parse_time(timestamp)


def stream_records(seed: int, n: int, **shape: Any) -> list[dict[str, Any]]:
    """The transactions of `random_stream`, without their parsed event times."""
    return [record for record, _ in random_stream(seed=seed, n=n, **shape)]


def online_features(
    store: FeatureStore,
    stream: list[tuple[dict[str, Any], float]],
    batch: int,
    source: str = "t:0",
    first: int = 0,
) -> np.ndarray:
    """The stream's feature vectors from `store`, computed `batch` transactions at a time,
    each transaction at offset first + its index of `source`."""
    rows = []
    for start in range(0, len(stream), batch):
        chunk = stream[start : start + batch]
        txs = [TxnInput.from_record(r, ts) for r, ts in chunk]
        positions = [SourcePosition(source, first + start + i) for i in range(len(chunk))]
        rows.append(store.compute(txs, positions))
    return np.vstack(rows)


def same_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise identity, NaN equal to NaN."""
    return (a == b) | (np.isnan(a) & np.isnan(b))
