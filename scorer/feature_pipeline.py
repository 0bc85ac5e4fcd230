"""Feature requests sent ahead, so Redis works on one batch while the scorer finishes the
previous one (model, outputs, Kafka transaction).

All requests go down one dedicated connection, in order: Redis executes a connection's
commands in the order they arrive, so batch N's script calls always run before batch
N+1's, as they would one round trip at a time. Results are collected in the same order.

If the connection breaks or Redis lost the scripts (a restart), every request not yet
answered is sent again, in order, on a new connection. That is safe because the scripts
are idempotent per transaction_id and per source offset: whatever Redis already applied
answers with the same vector and changes nothing.
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
from scorer.feature_store import BatchPlan, FeatureStore, ReplyReader, SourcePosition

logger = logging.getLogger(__name__)
# Several batches of requests (a batch of 1,000 transactions is ~0.4 MB).
SEND_BUFFER_BYTES = 8 * 1024 * 1024


class PendingFeatures:
    """One batch's feature request, sent; `FeaturePipeline.result` waits for it."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan


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
                replies = self._replies.read(plan.calls)
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
            return plan.fill(replies)
        raise AssertionError("unreachable")

    def discard(self) -> None:
        """Forget every unanswered request (their batches will be consumed again)."""
        self._drop_connection()
        self._unanswered.clear()

    def close(self) -> None:
        self.discard()

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
        pool = self.store.client.connection_pool
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
            self.store.client.connection_pool.release(self._connection)
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
