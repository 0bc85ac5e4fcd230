"""TxnInput.from_record against the frozen dataclass it replaced (kept here as reference)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from fraudcore.features import TxnInput


@dataclasses.dataclass(frozen=True)
class ReferenceTxnInput:
    transaction_id: str
    user_id: str
    merchant_id: str
    ts_ms: int
    cents: int
    country: str
    lat: float | None
    lon: float | None
    device: str

    @classmethod
    def from_record(cls, record: dict[str, Any], event_ts: float) -> ReferenceTxnInput:
        lat, lon = record.get("lat"), record.get("lon")
        return cls(
            transaction_id=record["transaction_id"],
            user_id=record["user_id"],
            merchant_id=record["merchant_id"],
            ts_ms=round(event_ts * 1000),
            cents=round(record["amount"] * 100),
            country=record.get("country") or "",
            lat=float(lat) if lat is not None and lon is not None else None,
            lon=float(lon) if lat is not None and lon is not None else None,
            device=record.get("device_id") or "",
        )


def test_from_record_gives_the_same_fields_as_the_dataclass_did() -> None:
    rng = random.Random(5)
    names = [f.name for f in dataclasses.fields(ReferenceTxnInput)]
    assert list(TxnInput._fields) == names
    for i in range(3000):
        record: dict[str, Any] = {
            "transaction_id": f"t{i}",
            "user_id": f"u{i % 7}",
            "merchant_id": "m",
            "amount": rng.choice([0, 12.345, 0.005, 1_000_000, rng.uniform(0, 1e4)]),
        }
        for name, values in (
            ("country", ["FR", ""]),
            ("lat", [0, -90, 12.5, 45]),
            ("lon", [0, 180, -3.25]),
            ("device_id", ["d1", ""]),
        ):
            if rng.random() < 0.6:
                record[name] = rng.choice(values)
        event_ts = rng.choice([946_684_800.0, 1_795_000_000.1235, rng.uniform(1e9, 2e9)])
        got = TxnInput.from_record(record, event_ts)
        want = ReferenceTxnInput.from_record(record, event_ts)
        for name in names:
            assert repr(getattr(got, name)) == repr(getattr(want, name)), (record, name)
