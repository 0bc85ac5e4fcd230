"""A batch's features on a Redis Cluster: FeaturePipeline's interface (submit, result,
confirm, discard), one batch at a time.

`result` sends the batch's reads through the SlotRouter (one request per master, all in
flight at once) and computes the features; `confirm` sends the changed user states the
same way and checks their answers, before the batch is committed. Nothing is sent
ahead: the reads of batch N+1 go out after batch N's writes were answered, so the order
of the merchant calls across batches and the users' compare-and-set need no more care
than on one node. With `replica_acks`, both requests end with WAIT on each master, so the
batch's merchant counts and user states are on that many replicas before its Kafka commit
(a failover then promotes a replica that holds them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis

from fraudcore.features import TxnInput
from scorer.feature_pipeline import PendingFeatures
from scorer.feature_store import FeatureStore, SourcePosition


class RoutedFeatures:
    def __init__(self, store: FeatureStore) -> None:
        if store.router is None:
            raise ValueError("RoutedFeatures needs a feature store on a Redis Cluster")
        self.store = store

    def submit(
        self, txs: Sequence[TxnInput], positions: Sequence[SourcePosition]
    ) -> PendingFeatures:
        """The batch's reads, planned; they are sent by `result`."""
        return PendingFeatures(self.store.plan(txs, positions))

    def result(self, pending: PendingFeatures) -> np.ndarray:
        """The batch's feature matrix. Raises redis.ConnectionError / TimeoutError while
        the cluster cannot serve the batch's slots; calling again retries (the reads are
        idempotent)."""
        plan = pending.plan
        if not plan.calls:
            return plan.out
        replies = self.store.run_reads(plan)
        if pending.writes is None:
            pending.writes = self.store.finish_users(plan, replies[: plan.n_gets])
        plan.fill_merchants(replies[plan.n_gets :])
        return plan.out

    def confirm(self, pending: PendingFeatures) -> None:
        """Write the batch's user states. Raises UserStateConflict if another process wrote
        some of its users since they were read, or the redis error the writes met: the
        batch must not be committed then (and computing it again is safe)."""
        writes = pending.writes
        if writes is None or not writes.calls or pending.confirmed:
            return
        try:
            replies = self.store.run_writes(writes)
        except (redis.ConnectionError, redis.TimeoutError):
            self.store.forget_written()  # what the cluster holds is the truth now
            raise
        self.store.check_writes(writes, replies)
        pending.confirmed = True

    def discard(self) -> None:
        """Nothing is in flight between calls: nothing to forget."""

    def close(self) -> None:
        self.discard()
