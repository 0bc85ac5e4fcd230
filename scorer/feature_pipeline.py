"""Feature reads sent ahead, so Redis works on one batch while the scorer finishes the
previous one (model, outputs, Kafka transaction).

All reads go down one dedicated connection, in order: Redis executes a connection's
commands in the order they arrive, so batch N's merchant script calls always run before
batch N+1's, as they would one round trip at a time. Results are collected in the same
order. The user states a batch changed go down a second connection as soon as its
features are computed; `confirm` reads their answers before the batch is committed. A
batch's reads may therefore run before the previous batch's writes: the store uses the
state it wrote itself when that is newer than what it read, and does not read the users
it wrote lately at all (FeatureStore.finish_users).

If the read connection breaks or Redis lost the scripts (a restart), every read not yet
answered is sent again, in order, on a new connection. That is safe because the reads
change nothing but merchant counts, which are idempotent per source offset. A write whose
answer is lost counts as refused: the batch is not committed, and is computed again from
what Redis holds (the compare-and-set makes a write that did land harmless).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis
from redis.exceptions import NoScriptError

from fraudcore.features import TxnInput
from fraudcore.logs import kv
from scorer.feature_store import (
    BatchPlan,
    FeatureStore,
    SourcePosition,
    UserStateConflict,
    UserWrites,
)
from scorer.resp import ReplyReader

logger = logging.getLogger(__name__)
# Several batches of requests (a batch of 1,000 transactions is ~0.4 MB).
SEND_BUFFER_BYTES = 8 * 1024 * 1024


class PendingFeatures:
    """One batch's feature request, sent; `FeaturePipeline.result` waits for it."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.writes: UserWrites | None = None  # sent by `result`, answered by `confirm`
        self.confirmed = False


class FeaturePipeline:
    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        # redis-py's connection classes are loosely typed; this is a redis.Connection.
        self._connection: Any = None
        self._replies: ReplyReader | None = None  # reads every reply of _connection
        self._unanswered: deque[PendingFeatures] = deque()
        self._sender: threading.Thread | None = None
        self._send_failed: BaseException | None = None
        # Requests up to this size are written by the caller: the socket's send buffer
        # takes them whole, so the write returns at once (see _reconnect).
        self._inline_limit = 0
        self._writer: Any = None  # a second redis.Connection, for the user-state writes
        self._write_replies: ReplyReader | None = None
        self._unconfirmed: deque[PendingFeatures] = deque()

    def submit(
        self, txs: Sequence[TxnInput], positions: Sequence[SourcePosition]
    ) -> PendingFeatures:
        """Send a batch's script calls and return at once. A connection error here is not
        raised: the request is sent again when its result is asked for."""
        plan = self.store.plan(txs, positions)
        pending = PendingFeatures(plan)
        if not plan.calls:
            return pending
        self._unanswered.append(pending)
        try:
            self._wait_for_sender()
            if self._connection is None:
                self._reconnect()  # sends this request with every other unanswered one
            elif len(plan.request) <= self._inline_limit:
                self._connection.send_packed_command([plan.request], check_health=False)
            else:
                self._send_in_background(self._connection, plan.request)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            logger.warning("redis send failed, will retry %s", kv(error=exc))
            self._drop_connection()
        return pending

    def result(self, pending: PendingFeatures) -> np.ndarray:
        """The batch's feature matrix. Must be called in submission order. Raises
        redis.ConnectionError / TimeoutError while Redis is unreachable; calling again
        retries (the caller decides how long to keep trying)."""
        plan = pending.plan
        if not plan.calls:
            return plan.out
        if not self._unanswered or self._unanswered[0] is not pending:
            raise RuntimeError("feature results must be collected in submission order")
        for attempt in (1, 2):
            try:
                # The next batch's request may still be being written by the sender
                # thread: reading meanwhile is what lets Redis and the caller overlap.
                if self._send_failed is not None:
                    self._wait_for_sender()
                if self._connection is None:
                    self._reconnect()
                assert self._replies is not None
                # The users' states come first: their features are computed (and their
                # writes sent) while Redis is still busy with the merchant calls.
                users = self._replies.read(plan.n_gets)
                if pending.writes is None:
                    self._send_writes(pending, self.store.finish_users(plan, users))
                merchants = self._replies.read(plan.calls - plan.n_gets)
            except NoScriptError:
                self._drop_connection()  # the rest of this reply stream is useless
                if attempt == 2:
                    raise
                logger.warning("redis lost the feature scripts; reloading %s", kv(attempt=attempt))
                self.store.load_scripts()  # same SHA-1s: the requests stay as they are
                continue
            except BaseException:
                self._drop_connection()
                raise
            self._unanswered.popleft()
            plan.fill_merchants(merchants)
            return plan.out
        raise AssertionError("unreachable")

    def confirm(self, pending: PendingFeatures) -> None:
        """Wait until Redis has taken the batch's user states. Raises UserStateConflict if
        another process wrote some of its users since they were read, or redis errors if
        the answer is lost: the batch must not be committed then (and computing it again
        is safe). Must be called in submission order, after `result`."""
        writes = pending.writes
        if writes is None or not writes.calls or pending.confirmed:
            return
        if not self._unconfirmed or self._unconfirmed[0] is not pending:
            if pending in self._unconfirmed:
                raise RuntimeError("feature writes must be confirmed in submission order")
            raise redis.ConnectionError("the answer to the user-state writes was lost")
        try:
            assert self._write_replies is not None
            replies = self._write_replies.read(writes.calls)
            self._unconfirmed.popleft()
            self.store.check_writes(writes, replies)
            pending.confirmed = True
        except UserStateConflict:
            raise
        except NoScriptError as exc:
            # A Redis restarted since the writes were sent has lost the write script: the
            # states were not written, so the batch is computed again once it is loaded.
            self._drop_writer()
            self.store.load_scripts()
            raise redis.ConnectionError(f"redis lost the user-state script: {exc}") from exc
        except BaseException:
            self._drop_writer()
            raise

    def _send_writes(self, pending: PendingFeatures, writes: UserWrites) -> None:
        pending.writes = writes
        if not writes.calls:
            return
        self._unconfirmed.append(pending)
        try:
            if self._writer is None:
                connection: Any = self.store.single_node.connection_pool.get_connection()
                self._writer = connection
                self._write_replies = ReplyReader(connection)
                _widen_send_buffer(connection)
            self._writer.send_packed_command([writes.request], check_health=False)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            # `confirm` reports it: the batch is computed again.
            logger.warning("redis write failed %s", kv(error=exc))
            self._drop_writer()

    def _drop_writer(self) -> None:
        """Forget the writes in flight (their batches are computed again) and what this
        process remembers writing: Redis holds the truth from now on."""
        if self._writer is not None:
            self._writer.disconnect()
            self.store.single_node.connection_pool.release(self._writer)
        self._writer = None
        self._write_replies = None
        self._unconfirmed.clear()
        self.store.forget_written()

    def discard(self) -> None:
        """Forget every unanswered request and unconfirmed write (their batches will be
        consumed again)."""
        self._drop_connection()
        self._unanswered.clear()
        if self._unconfirmed:
            self._drop_writer()

    def close(self) -> None:
        self.discard()
        self._drop_writer()

    # ------------------------------------------------------------------ connection
    def _send_in_background(self, connection: Any, request: bytes) -> None:
        # A batch's request is a few hundred kB: writing it blocks until Redis has read
        # most of it, i.e. executed most of the calls. A thread writes it (the GIL is
        # released while the socket blocks) so the caller can go on at once.
        def send() -> None:
            try:
                connection.send_packed_command([request], check_health=False)
            except BaseException as exc:  # handed to the caller's thread
                self._send_failed = exc

        self._sender = threading.Thread(target=send, name="feature-send", daemon=True)
        self._sender.start()

    def _wait_for_sender(self) -> None:
        if self._sender is not None:
            self._sender.join()
            self._sender = None
        if self._send_failed is not None:
            error, self._send_failed = self._send_failed, None
            self._drop_connection()
            logger.warning("redis send failed, will retry %s", kv(error=error))

    def _reconnect(self) -> None:
        """A new connection, with every unanswered request sent again, in order."""
        pool = self.store.single_node.connection_pool
        connection: Any = pool.get_connection()
        try:
            self._inline_limit = _widen_send_buffer(connection) // 4
            if self._unanswered:
                connection.send_packed_command(
                    [p.plan.request for p in self._unanswered], check_health=False
                )
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        self._connection = connection
        self._replies = ReplyReader(connection)
        if len(self._unanswered) > 1:
            logger.info("resent feature requests %s", kv(batches=len(self._unanswered)))

    def _drop_connection(self) -> None:
        if self._sender is not None:
            self._sender.join()
            self._sender = None
        self._send_failed = None
        if self._connection is not None:
            self._connection.disconnect()
            self.store.single_node.connection_pool.release(self._connection)
            self._connection = None
            self._replies = None


def _widen_send_buffer(connection: Any) -> int:
    """Ask for a send buffer that holds a few batches' requests; returns what the kernel
    granted (it caps the request at net.core.wmem_max). With the request in the kernel's
    buffer the caller's write returns at once, and no thread has to finish it: a writer
    thread took the GIL back for every chunk Redis read, which slowed the scorer's main
    thread most when the machine was busiest."""
    sock = connection._sock
    if sock is None:
        return 0
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:
        return 0
