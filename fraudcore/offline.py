"""The offline feature build: the trainer's feature vectors, from a stream in memory.

It runs the scorer's arithmetic, not a copy: the user kernel over user states kept here
(in the stored format, fraudcore/user_state.py) and the merchant kernel over records
written from merchant states kept here. Tests feed one stream through this and through
the scorer's feature store and assert identical vectors, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fraudcore.features import (
    FEATURE_NAMES,
    MERCHANT_COLUMNS,
    USER_COLUMNS,
    TxnInput,
    derive_columns,
    fill_event_columns,
)
from fraudcore.merchant import MerchantState, compute_merchants
from fraudcore.user_kernel import compute_users, group_rows
from fraudcore.user_state import version


class OfflineFeatureBuilder:
    """Feature vectors from a stream, exactly as the scorer computes them online.

    Feed transactions in stream order (a file's order, or a topic partition's order), in
    one call or in consecutive chunks. Labels may be added at any time, even all up front:
    each counts only for transactions at or after its available_at, so no label leaks
    into an earlier transaction.
    """

    def __init__(self) -> None:
        self.users: dict[str, bytes] = {}
        self.merchants: dict[str, MerchantState] = {}

    def add_label(
        self, merchant_id: str, transaction_id: str, label: str, available_ts: float
    ) -> None:
        state = self.merchants.setdefault(merchant_id, MerchantState())
        state.fold_label(transaction_id, label, round(available_ts * 1000))

    def add_labels(self, labels: Iterable[tuple[str, str, str, float]]) -> None:
        for merchant_id, transaction_id, label, available_ts in labels:
            self.add_label(merchant_id, transaction_id, label, available_ts)

    def transactions(self, stream: Iterable[tuple[dict[str, Any], float]]) -> np.ndarray:
        """The feature vectors (FEATURE_NAMES order; NaN = missing), folding them in."""
        return self.compute([TxnInput.from_record(record, ts) for record, ts in stream])

    def compute(self, txs: Sequence[TxnInput]) -> np.ndarray:
        n = len(txs)
        out = np.empty((n, len(FEATURE_NAMES)), np.float64)
        if not n:
            return out
        ts = np.fromiter((tx.ts_ms for tx in txs), np.int64, n)
        fill_event_columns(out, ts, np.fromiter((tx.cents for tx in txs), np.int64, n))

        users, user_rows, user_tx = group_rows([tx.user_id for tx in txs])
        states = [self.users.get(user) for user in users]
        result = compute_users(
            txs, user_rows, user_tx, states, [0 if s is None else version(s) for s in states]
        )
        out[:, USER_COLUMNS] = result.features
        for user, state in zip(users, result.states, strict=True):
            if state is not None:
                self.users[user] = state

        merchants, merchant_rows, merchant_tx = group_rows([tx.merchant_id for tx in txs])
        counted = ~result.replayed
        records: list[bytes] = []
        for m, merchant_id in enumerate(merchants):
            merchant = self.merchants.setdefault(merchant_id, MerchantState())
            members = merchant_rows[merchant_tx[m] : merchant_tx[m + 1]]
            records.append(merchant.record(counted[members].tolist()))
            for i in members[counted[members]].tolist():
                merchant.count(txs[i].ts_ms)
        out[:, MERCHANT_COLUMNS] = compute_merchants(
            b"".join(records), merchant_tx, merchant_rows, ts
        )
        derive_columns(out)
        return out
