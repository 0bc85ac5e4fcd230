"""The merchant features' arithmetic, and the record it is computed from.

This is the one implementation. A merchant's state is shared by every partition (its
transactions come from every card), so the scorer keeps it in Redis and changes it
atomically there: scorer/lua/merchant.lua counts a batch's transactions of one merchant
(once per source offset) and answers a *merchant record*, what the state held before the
call. The offline build (fraudcore/offline.py) writes the same records from a
`MerchantBook` in memory. `run_merchants` computes the features from the records, for
both.

A merchant record is little-endian 8-byte words:

    n_days, n_frauds    doubles
    day, count          n_days words, each two int32: transactions counted on a UTC day
    available_at_ms     n_frauds doubles: when each distinct fraud label became known
    counted             a double per transaction of the call, in its order: 1 if the call
                        counted it, 0 if it was counted before (a replay) or read-only

Transaction counts are of the full UTC days before the transaction's day, so within a
batch a transaction counts the batch's earlier ones only from its previous days. Days are
kept for `KEEP_DAYS`, so events up to 14 days late still find every day of their window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np

from fraudcore.features import DAY_MS, MERCHANT_NAMES

# Days of transaction counts a merchant keeps (the features need 30).
KEEP_DAYS = 45
# What the kernel computes, in the order of its value array (see user_kernel.OUTPUTS).
OUTPUTS = (
    "merchant_txn_count_1d", "merchant_txn_count_7d", "merchant_txn_count_30d",
    "merchant_fraud_count_1d", "merchant_fraud_count_7d", "merchant_fraud_count_30d",
    "merchant_fraud_ratio_7d", "merchant_fraud_ratio_30d",
)  # fmt: skip
_missing = sorted(set(MERCHANT_NAMES) - set(OUTPUTS))
if _missing:
    raise ImportError(f"merchant features with no arithmetic in fraudcore/merchant.py: {_missing}")
SLOTS = np.array(
    [MERCHANT_NAMES.index(n) if n in MERCHANT_NAMES else -1 for n in OUTPUTS], np.int64
)
N_OUTPUTS = len(OUTPUTS)


@numba.njit(cache=True, nogil=True)
def run_merchants(
    records: np.ndarray,  # float64 view of the merchants' records, concatenated
    days_view: np.ndarray,  # int32 view of the same memory
    merchant_tx: np.ndarray,  # per merchant + 1: where its rows start in `rows`
    rows: np.ndarray,  # transaction rows grouped by merchant, in stream order
    ts: np.ndarray,  # per transaction: event time, ms
    slots: np.ndarray,  # SLOTS
    out: np.ndarray,  # (transactions, merchant features)
) -> int:
    """Every transaction's merchant features; returns the words of `records` read."""
    values = np.empty(N_OUTPUTS, np.float64)
    p = 0
    for m in range(merchant_tx.shape[0] - 1):
        n_days = int(records[p])
        n_frauds = int(records[p + 1])
        days = days_view[2 * (p + 2) : 2 * (p + 2 + n_days) : 2].astype(np.int64)
        counts = days_view[2 * (p + 2) + 1 : 2 * (p + 2 + n_days) : 2].astype(np.int64)
        f = p + 2 + n_days
        frauds = records[f : f + n_frauds].astype(np.int64)
        counted = records[f + n_frauds : f + n_frauds + merchant_tx[m + 1] - merchant_tx[m]]
        p = f + n_frauds + merchant_tx[m + 1] - merchant_tx[m]
        first = merchant_tx[m]
        for q in range(first, merchant_tx[m + 1]):
            i = rows[q]
            t = ts[i]
            today = t // DAY_MS
            c1 = c7 = c30 = 0
            for j in range(n_days):
                age = today - days[j]
                if 1 <= age <= 30:
                    c30 += counts[j]
                    if age <= 7:
                        c7 += counts[j]
                        if age == 1:
                            c1 += counts[j]
            for e in range(first, q):  # the batch's earlier transactions, if counted
                if counted[e - first] != 0.0:
                    age = today - ts[rows[e]] // DAY_MS
                    if 1 <= age <= 30:
                        c30 += 1
                        if age <= 7:
                            c7 += 1
                            if age == 1:
                                c1 += 1
            f1 = f7 = f30 = 0
            for j in range(n_frauds):
                age_ms = t - frauds[j]
                if 0 <= age_ms < 30 * DAY_MS:
                    f30 += 1
                    if age_ms < 7 * DAY_MS:
                        f7 += 1
                        if age_ms < DAY_MS:
                            f1 += 1
            # In OUTPUTS order.
            values[0], values[1], values[2] = c1, c7, c30
            values[3], values[4], values[5] = f1, f7, f30
            values[6], values[7] = f7 / (c7 + 1), f30 / (c30 + 1)
            for k in range(N_OUTPUTS):
                if slots[k] >= 0:
                    out[i, slots[k]] = values[k]
    return p


def compute_merchants(
    records: bytes, merchant_tx: np.ndarray, rows: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """(transactions, merchant features) from the merchants' records, concatenated in
    the order of merchant_tx."""
    words = np.frombuffer(records, "<f8")
    out = np.empty((ts.shape[0], len(MERCHANT_NAMES)), np.float64)
    used = run_merchants(words, words.view(np.int32), merchant_tx, rows, ts, SLOTS, out)
    if used != words.shape[0]:
        raise ValueError(
            f"merchant records hold {words.shape[0]} words, the batch's transactions "
            f"account for {used}"
        )
    return out


@dataclass
class MerchantState:
    days: dict[int, int] = field(default_factory=dict)  # day -> transactions counted
    frauds: dict[str, int] = field(default_factory=dict)  # txid -> available_at ms

    def record(self, counted: Sequence[bool]) -> bytes:
        days = np.array(list(self.days.items()), "<i4").reshape(-1, 2)
        return b"".join(
            (
                np.array([len(self.days), len(self.frauds)], "<f8").tobytes(),
                days.tobytes(),
                np.array(list(self.frauds.values()), "<f8").tobytes(),
                np.array(counted, "<f8").tobytes(),
            )
        )

    def count(self, ts_ms: int) -> None:
        today = ts_ms // DAY_MS
        for day in [d for d in self.days if d < today - KEEP_DAYS]:
            del self.days[day]
        self.days[today] = self.days.get(today, 0) + 1

    def fold_label(self, transaction_id: str, label: str, available_ms: int) -> None:
        """Only fraud labels count; the first one for a transaction wins (a chargeback and
        an analyst's verdict on one transaction count once)."""
        if label == "fraud" and transaction_id not in self.frauds:
            self.frauds[transaction_id] = available_ms


def warm_up() -> float:
    """Compile the kernel (or load it from numba's cache) before the first batch."""
    started = time.perf_counter()
    record = MerchantState().record([True])
    compute_merchants(record, np.array([0, 1]), np.array([0], np.intp), np.array([DAY_MS]))
    return time.perf_counter() - started
