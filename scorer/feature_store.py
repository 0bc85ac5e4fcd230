"""Online features: the scorer's view of per-user and per-merchant state in Redis.

One pipeline, so one Redis round trip, per batch. Inside it, one script call per user and
one per merchant that the batch touches: each call is atomic and touches the keys of one
hash slot only (the {user} or {merchant} hash tag), so the state can be sharded across a
Redis Cluster when users outgrow one Redis.

Idempotent: a replayed transaction (same transaction_id, e.g. after a crash before the
Kafka transaction committed) gets the feature vector it got the first time and changes
nothing; merchant counts skip any source offset already counted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain
from typing import Any

import hiredis
import msgpack
import numpy as np
import redis
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

from fraudcore.features import (
    FEATURE_NAMES,
    MERCHANT_NAMES,
    STATELESS_NAMES,
    USER_NAMES,
    TxnInput,
    stateless_matrix,
)
from fraudcore.logs import kv

logger = logging.getLogger(__name__)

_USER_SLICE = slice(len(STATELESS_NAMES), len(STATELESS_NAMES) + len(USER_NAMES))
_MERCHANT_SLICE = slice(_USER_SLICE.stop, _USER_SLICE.stop + len(MERCHANT_NAMES))


def _script(name: str) -> str:
    return resources.files("scorer").joinpath("lua", f"{name}.lua").read_text()


@dataclass(frozen=True)
class SourcePosition:
    """Where a transaction came from: merchant counts dedupe on it."""

    source: str  # "topic:partition"
    offset: int


class FeatureStore:
    def __init__(self, client: redis.Redis, key_prefix: str = "fx", ttl_s: int = 35 * 86400):
        self.client = client
        self.prefix = key_prefix
        self.ttl_ms = str(ttl_s * 1000)
        self._sources = {name: _script(name) for name in ("user", "merchant", "label")}
        # SCRIPT LOAD answers the script's SHA-1, so requests can be encoded before (and
        # stay valid after) a reload.
        self._sha = {
            name: hashlib.sha1(source.encode()).hexdigest()
            for name, source in self._sources.items()
        }
        self.load_scripts()
        # Every script call of a batch is one RESP array; only the key and the packed
        # arguments vary, so the rest is built once here.
        self._user_call = _call_template(self._sha["user"], "0", self.ttl_ms)
        self._user_call_readonly = _call_template(self._sha["user"], "1", self.ttl_ms)
        self._merchant_call = _call_template(self._sha["merchant"], "0", self.ttl_ms)
        self._merchant_call_readonly = _call_template(self._sha["merchant"], "1", self.ttl_ms)
        self._pack = msgpack.Packer().pack  # msgpack.packb builds a Packer every call

    def load_scripts(self) -> None:
        for name, source in self._sources.items():
            sha = str(self.client.script_load(source))
            if sha != self._sha[name]:
                raise RuntimeError(f"redis answered sha {sha} for script {name!r}, not SHA-1")

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:u:{{{user_id}}}"

    def merchant_key(self, merchant_id: str) -> str:
        return f"{self.prefix}:m:{{{merchant_id}}}"

    def merchant_state(self, merchant_id: str) -> MerchantSnapshot:
        """The merchant's state as stored (for tests and operators)."""
        raw = self.client.get(self.merchant_key(merchant_id))
        if raw is None:
            return MerchantSnapshot({}, {}, {})
        days, marks, frauds = msgpack.unpackb(raw, strict_map_key=False)
        return MerchantSnapshot(dict(days or {}), dict(marks or {}), dict(frauds or {}))

    def compute(
        self,
        txs: Sequence[TxnInput],
        positions: Sequence[SourcePosition] | None = None,
        *,
        readonly: bool = False,
    ) -> np.ndarray:
        """Feature vectors (len(txs) x len(FEATURE_NAMES)) for a batch, in stream order,
        folding the batch into the state unless read-only. One Redis round trip."""
        plan = self.plan(txs, positions, readonly=readonly)
        if not plan.calls:
            return plan.out
        return plan.fill(self._run(plan.request, plan.calls))

    def plan(
        self,
        txs: Sequence[TxnInput],
        positions: Sequence[SourcePosition] | None = None,
        *,
        readonly: bool = False,
    ) -> BatchPlan:
        """The batch's script calls (one per user, one per merchant) as one RESP request,
        and where their replies go; the stateless features are already filled in."""
        n = len(txs)
        out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
        if not n:
            return BatchPlan(out, b"", 0, 0, _NO_ROWS, _NO_ROWS)
        if positions is None:
            if not readonly:
                raise ValueError("positions are required to update merchant state")
            positions = [SourcePosition("readonly:0", -1)] * n
        by_user: dict[str, list[TxnInput]] = {}
        user_rows: dict[str, list[int]] = {}
        by_merchant: dict[str, list[Any]] = {}
        merchant_rows: dict[str, list[int]] = {}
        for i, tx in enumerate(txs):
            user = by_user.get(tx.user_id)
            if user is None:
                by_user[tx.user_id] = [tx]
                user_rows[tx.user_id] = [i]
            else:
                user.append(tx)
                user_rows[tx.user_id].append(i)
            position = positions[i]
            merchant = by_merchant.get(tx.merchant_id)
            if merchant is None:
                by_merchant[tx.merchant_id] = [tx.ts_ms, position.source, position.offset]
                merchant_rows[tx.merchant_id] = [i]
            else:
                merchant += (tx.ts_ms, position.source, position.offset)
                merchant_rows[tx.merchant_id].append(i)
        out[:, : _USER_SLICE.start] = stateless_matrix(
            np.fromiter((tx.ts_ms for tx in txs), np.int64, n),
            np.fromiter((tx.cents for tx in txs), np.int64, n),
        )
        pack = self._pack
        chunks: list[bytes] = []
        append = chunks.append
        # The user script takes the TxnInput tuples as they are (lat/lon nil when unknown).
        kinds: tuple[tuple[dict[str, list[Any]], bytes, Callable[[str], str]], ...] = (
            (by_user, self._user_call_readonly if readonly else self._user_call, self.user_key),
            (
                by_merchant,
                self._merchant_call_readonly if readonly else self._merchant_call,
                self.merchant_key,
            ),
        )
        for groups, template, key_of in kinds:
            for entity, group in groups.items():
                key = key_of(entity).encode()
                args = pack(group)
                append(template % (len(key), key, len(args), args))
        return BatchPlan(
            out,
            b"".join(chunks),
            len(chunks),
            len(by_user),
            np.fromiter(chain.from_iterable(user_rows.values()), np.intp, n),
            np.fromiter(chain.from_iterable(merchant_rows.values()), np.intp, n),
        )

    def fold_label(
        self, merchant_id: str, transaction_id: str, label: str, available_ms: int
    ) -> bool:
        """Count a fraud label for its merchant (once per transaction)."""
        return self.fold_labels([(merchant_id, transaction_id, label, available_ms)]) == 1

    def fold_labels(self, labels: Sequence[tuple[str, str, str, int]]) -> int:
        """Fold many labels in one round trip; returns how many were newly counted."""
        if not labels:
            return 0
        commands = [
            ("label", "1", self.merchant_key(m), txid, label, str(available), self.ttl_ms)
            for m, txid, label, available in labels
        ]
        replies = self._run(_encode(commands, self._sha), len(commands))
        return sum(int(r) for r in replies)

    def _run(self, request: bytes, calls: int) -> list[Any]:
        """Send a request of `calls` EVALSHA commands in one piece and return the replies
        in order. If Redis lost the scripts (a restart), they are reloaded and the request
        is sent once more, which is safe because every script is idempotent."""
        for attempt in (1, 2):
            pool = self.client.connection_pool
            connection = pool.get_connection()
            try:
                connection.send_packed_command([request], check_health=False)
                return ReplyReader(connection).read(calls)
            except NoScriptError:
                connection.disconnect()  # later replies of this request are unread
                if attempt == 2:
                    raise
                logger.warning("redis lost the feature scripts; reloading %s", kv(attempt=attempt))
                self.load_scripts()
            except BaseException:
                connection.disconnect()
                raise
            finally:
                pool.release(connection)
        raise AssertionError("unreachable")


_NO_ROWS = np.empty(0, dtype=np.intp)
_USER_WIDTH = _USER_SLICE.stop - _USER_SLICE.start
_MERCHANT_WIDTH = _MERCHANT_SLICE.stop - _MERCHANT_SLICE.start


@dataclass(frozen=True)
class BatchPlan:
    """A batch's script calls, and the feature matrix their replies complete."""

    out: np.ndarray
    request: bytes  # RESP: every call of the batch, users first
    calls: int
    n_users: int  # the first n_users calls are user calls, the rest merchant calls
    user_rows: np.ndarray  # rows of `out` the user replies answer for, in reply order
    merchant_rows: np.ndarray

    def fill(self, replies: Sequence[bytes]) -> np.ndarray:
        """Write the replies (little-endian doubles, a vector per transaction) into the
        matrix: one assignment per kind of call."""
        n_users = self.n_users
        self._put(b"".join(replies[:n_users]), self.user_rows, _USER_SLICE, _USER_WIDTH)
        self._put(b"".join(replies[n_users:]), self.merchant_rows, _MERCHANT_SLICE, _MERCHANT_WIDTH)
        return self.out

    def _put(self, data: bytes, rows: np.ndarray, columns: slice, width: int) -> None:
        if len(data) != 8 * width * len(rows):
            raise ValueError(
                f"feature replies hold {len(data)} bytes, expected {len(rows)} x {width} doubles"
            )
        # + 0.0 turns a -0.0 into 0.0, as msgpack (which carried it as integer 0) did.
        self.out[rows, columns] = np.frombuffer(data, "<f8").reshape(len(rows), width) + 0.0


@dataclass(frozen=True)
class MerchantSnapshot:
    days: dict[int, int]
    marks: dict[str, int]
    frauds: dict[str, int]


class ReplyReader:
    """A connection's replies read straight off its socket into a hiredis reader: one
    `gets` a reply instead of redis-py's read_response, which costs a few microseconds
    each. Only for a connection whose replies are all read here (or none pending when
    redis-py reads from it)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_reply_error)

    def read(self, count: int) -> list[Any]:
        """The next `count` replies; a reply error (e.g. NOSCRIPT) is raised."""
        replies: list[Any] = []
        gets = self._reader.gets
        while len(replies) < count:
            reply = gets()
            if reply is False:
                self._receive()
            elif isinstance(reply, ResponseError):
                raise reply
            else:
                replies.append(reply)
        return replies

    def _receive(self) -> None:
        sock = self.connection._sock
        if sock is None:
            raise redis.ConnectionError("connection closed")
        try:
            data = sock.recv(_RECEIVE_BYTES)
        except TimeoutError as exc:
            raise redis.TimeoutError("timeout reading from redis") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"error reading from redis: {exc}") from exc
        if not data:
            raise redis.ConnectionError("connection closed by redis")
        self._reader.feed(data)


_RECEIVE_BYTES = 1 << 18


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT "):
        return NoScriptError(message[len("NOSCRIPT ") :])
    return ResponseError(message)


def _call_template(sha: str, readonly: str, ttl_ms: str) -> bytes:
    """EVALSHA <sha> 1 <key> <args> <readonly> <ttl> with %-slots for key and args."""
    return (
        b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n" % sha.encode()
        + b"$%d\r\n%b\r\n$%d\r\n%b\r\n"
        + b"$%d\r\n%b\r\n$%d\r\n%b\r\n"
        % (len(readonly), readonly.encode(), len(ttl_ms), ttl_ms.encode())
    )


def _encode(commands: Sequence[tuple[Any, ...]], sha: dict[str, str]) -> bytes:
    """RESP arrays for EVALSHA <sha> <args...>, one per command (the array header and the
    sha are the same for every call of a script: built once per batch)."""
    chunks: list[bytes] = []
    append = chunks.append
    heads: dict[tuple[str, int], bytes] = {}
    for command in commands:
        shape = (command[0], len(command))
        head = heads.get(shape)
        if head is None:
            digest = sha[command[0]].encode()
            head = heads[shape] = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%b\r\n" % (
                len(command) + 1,
                len(digest),
                digest,
            )
        append(head)
        for part in command[1:]:
            data = part.encode() if type(part) is str else part
            append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(chunks)
