"""Kafka transactions whose commit runs in the background.

`send_offsets_to_transaction` and `commit_transaction` wait for the broker (~5-20 ms a
batch here; over 50 ms for ~2 % of batches at 1,000 tx/s until the producer's retry backoff
came down from 100 ms, see scorer/service.py): the produce requests, the offsets and the
commit markers. The scorer's main thread has better things to do meanwhile (consume,
decode and score the next batch), so both run in a thread and the next batch only waits for
them before it begins its own transaction. Only one
transaction is open at a time, as Kafka requires; the producer is touched by one thread
at a time (the commit thread owns it until `settle` has joined it).

`settle` waits at most until the transaction's deadline (its timeout on the broker, plus
a margin): past it the broker aborts the transaction anyway, so a call still running
then will not succeed, and librdkafka's calls do not always return at their own timeout
(after a broker restart, `send_offsets_to_transaction` can wait for good: librdkafka
#5456, #5511). `CommitStuck` then tells the caller to give the process up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from fraudcore.logs import kv
from scorer import metrics

logger = logging.getLogger(__name__)


class CommitStuck(RuntimeError):
    """A commit thread still inside a librdkafka call past the transaction's deadline."""


@dataclass
class Commit:
    """One transaction handed to the background: what the caller needs once it is settled."""

    payload: Any  # the caller's record of the batch
    first: dict[tuple[str, int], int]  # where to rewind if it aborts
    main_thread_s: float  # begin + produce, on the caller's thread
    began: float  # time.monotonic() at begin_transaction
    thread: threading.Thread | None = None
    call: str = "send_offsets_to_transaction"  # the broker call the thread is in
    committed_at: float = 0.0
    aborted: bool = False
    error: BaseException | None = None


class BackgroundCommitter:
    def __init__(
        self,
        producer: Producer,
        timeout_s: float,
        on_retriable: Callable[[KafkaError], None],
        deadline_s: float,
    ) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        # From begin_transaction to a settled commit, at most.
        self.deadline_s = deadline_s
        # Called on the commit thread: records the outage and sleeps (may raise to give up).
        self._on_retriable = on_retriable
        self._pending: Commit | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def start(
        self,
        produce: Callable[[], None],
        offsets: Sequence[TopicPartition],
        group_metadata: Any,
        first: dict[tuple[str, int], int],
        payload: Any,
    ) -> bool:
        """Begin a transaction and produce into it; add the offsets and commit it in the
        background (both wait for the broker). The previous one must be settled. False if
        it had to be aborted at once (the caller rewinds to `first`)."""
        if self._pending is not None:
            raise RuntimeError("the previous transaction is not settled")
        started = time.perf_counter()
        began = time.monotonic()
        try:
            self.producer.begin_transaction()
            produce()
        except KafkaException as exc:
            self._abort_or_raise(exc.args[0])
            return False
        commit = Commit(payload, first, time.perf_counter() - started, began)
        commit.thread = threading.Thread(
            target=self._commit,
            args=(commit, list(offsets), group_metadata),
            name="kafka-commit",
            daemon=True,
        )
        self._pending = commit
        commit.thread.start()
        return True

    def settle(self) -> tuple[Commit, float] | None:
        """Wait for the transaction in the background, if any; returns it and how long
        this call waited. Raises what the commit could not survive (fatal errors, an
        outage past its limit, CommitStuck past the deadline); an aborted one comes back
        with `aborted` set."""
        commit, self._pending = self._pending, None
        if commit is None:
            return None
        started = time.perf_counter()
        assert commit.thread is not None
        commit.thread.join(max(0.0, commit.began + self.deadline_s - time.monotonic()))
        if commit.thread.is_alive():
            raise CommitStuck(
                f"{commit.call} has not returned {time.monotonic() - commit.began:.0f}s after "
                f"the transaction began (deadline {self.deadline_s:.0f}s)"
            )
        if commit.error is not None:
            raise commit.error
        return commit, time.perf_counter() - started

    def close(self) -> None:
        """Let a commit in the background end (on the way out; its outcome is moot)."""
        commit, self._pending = self._pending, None
        if commit is not None and commit.thread is not None:
            commit.thread.join(max(0.0, commit.began + self.deadline_s - time.monotonic()))

    def _commit(self, commit: Commit, offsets: list[TopicPartition], group_metadata: Any) -> None:
        try:
            try:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s)
            except KafkaException as exc:
                commit.call = "abort_transaction"
                self._abort_or_raise(exc.args[0])
                commit.aborted = True
                return
            commit.call = "commit_transaction"
            while True:
                try:
                    self.producer.commit_transaction(self.timeout_s)
                    commit.committed_at = time.time()
                    return
                except KafkaException as exc:
                    error: KafkaError = exc.args[0]
                    if not error.retriable():
                        commit.call = "abort_transaction"
                        self._abort_or_raise(error)
                        commit.aborted = True
                        return
                    metrics.kafka_errors.labels("retriable").inc()
                    self._on_retriable(error)
        except BaseException as exc:  # handed to the thread that settles
            commit.error = exc

    def _abort_or_raise(self, error: KafkaError) -> None:
        if not error.txn_requires_abort():
            metrics.kafka_errors.labels("fatal").inc()
            raise KafkaException(error)
        metrics.kafka_errors.labels("abortable").inc()
        metrics.transactions_aborted.inc()
        logger.warning("aborting kafka transaction %s", kv(error=error))
        self.producer.abort_transaction(self.timeout_s)
