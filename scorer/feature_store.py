"""Online features: the scorer's view of per-user and per-merchant state in Redis.

One pipeline, so one Redis round trip, per batch to read: a GET per user the batch
touches, unless this process wrote that user's state itself lately (the 21 user features
are computed here, by scorer/user_kernel.py), and a script call per merchant (merchants are shared across partitions, so their counts are kept by
an atomic script in Redis). The changed user states go back in a second request, one
compare-and-set per user (scorer/lua/user_write.lua), which the caller confirms before
it commits the batch. Every call touches the keys of one hash slot only (the {user} or
{merchant} hash tag), so the state can be sharded across a Redis Cluster.

Idempotent: a replayed transaction (same transaction_id, e.g. after a crash before the
Kafka transaction committed) gets the feature vector it got the first time and changes
nothing; merchant counts skip any source offset already counted.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
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
from scorer.user_kernel import (
    DAY_WORDS,
    FORMAT,
    HEADER_WORDS,
    RECENT_WORDS,
    SEEN_WORDS,
    VERSION_BYTES,
    encode_state,
    run_users,
    state_words,
    transaction_ids,
)
from scorer.user_state import decode_legacy

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


class UserStateConflict(RuntimeError):
    """Another process wrote some of the batch's users after they were read: nothing of
    theirs was written by this batch, which must be computed again."""

    def __init__(self, users: Sequence[str]) -> None:
        super().__init__(f"user state changed under us: {len(users)} users, e.g. {users[0]!r}")
        self.users = list(users)


# States this process wrote lately (least recently written first). A user found here is
# not read from Redis again: the compare-and-set of its next write finds out if anyone
# else wrote it meanwhile. It also covers the reads sent ahead, before the previous
# batch's writes. ~16k users x ~2 KB.
WRITTEN_CACHE_USERS = 16_384


class FeatureStore:
    def __init__(self, client: redis.Redis, key_prefix: str = "fx", ttl_s: int = 35 * 86400):
        self.client = client
        self.prefix = key_prefix
        self.ttl_ms = str(ttl_s * 1000)
        self._sources = {name: _script(name) for name in ("merchant", "label", "user_write")}
        # SCRIPT LOAD answers the script's SHA-1, so requests can be encoded before (and
        # stay valid after) a reload.
        self._sha = {
            name: hashlib.sha1(source.encode()).hexdigest()
            for name, source in self._sources.items()
        }
        self.load_scripts()
        # Every script call of a batch is one RESP array; only the key and the packed
        # arguments vary, so the rest is built once here.
        self._merchant_call = _call_template(self._sha["merchant"], "0", self.ttl_ms)
        self._merchant_call_readonly = _call_template(self._sha["merchant"], "1", self.ttl_ms)
        digest = self._sha["user_write"].encode()
        self._write_head = b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n" % digest
        self._write_tail = b"$%d\r\n%b\r\n" % (len(self.ttl_ms), self.ttl_ms.encode())
        self._pack = msgpack.Packer().pack  # msgpack.packb builds a Packer every call
        self._written: OrderedDict[str, bytes] = OrderedDict()

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

    def forget_written(self) -> None:
        """Drop the states this process remembers writing (after a conflict, a lost
        connection or a rebalance: from now on, what Redis holds is the truth)."""
        self._written.clear()

    def compute(
        self,
        txs: Sequence[TxnInput],
        positions: Sequence[SourcePosition] | None = None,
        *,
        readonly: bool = False,
    ) -> np.ndarray:
        """Feature vectors (len(txs) x len(FEATURE_NAMES)) for a batch, in stream order,
        folding the batch into the state unless read-only: one round trip to read, one to
        write. Raises UserStateConflict if another process wrote one of the users
        meanwhile (those users are unchanged; computing the batch again is safe)."""
        plan = self.plan(txs, positions, readonly=readonly)
        if not plan.calls:
            return plan.out
        out, writes = self.finish(plan, self._run(plan.request, plan.calls))
        if writes.calls:
            self.check_writes(writes, self._run(writes.request, writes.calls))
        return out

    def plan(
        self,
        txs: Sequence[TxnInput],
        positions: Sequence[SourcePosition] | None = None,
        *,
        readonly: bool = False,
    ) -> BatchPlan:
        """The batch's reads (a GET per user not in the written cache, a script call per
        merchant) as one RESP request, and where their replies go; the stateless features
        are already filled."""
        n = len(txs)
        out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
        if not n:
            return BatchPlan(out, b"", 0, txs, [], [], 0, _NO_ROWS, _NO_ROWS, _NO_ROWS, readonly)
        if positions is None:
            if not readonly:
                raise ValueError("positions are required to update merchant state")
            positions = [SourcePosition("readonly:0", -1)] * n
        user_rows: dict[str, list[int]] = {}
        by_merchant: dict[str, list[Any]] = {}
        merchant_rows: dict[str, list[int]] = {}
        for i, tx in enumerate(txs):
            rows = user_rows.get(tx.user_id)
            if rows is None:
                user_rows[tx.user_id] = [i]
            else:
                rows.append(i)
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
        chunks: list[bytes] = []
        append = chunks.append
        written = self._written
        replies: list[int] = []
        for user in user_rows:
            if not readonly and user in written:
                replies.append(-1)
                continue
            replies.append(len(chunks))
            key = self.user_key(user).encode()
            append(b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key))
        n_gets = len(chunks)
        pack = self._pack
        template = self._merchant_call_readonly if readonly else self._merchant_call
        for merchant_id, group in by_merchant.items():
            key = self.merchant_key(merchant_id).encode()
            args = pack(group)
            append(template % (len(key), key, len(args), args))
        user_counts = np.fromiter(map(len, user_rows.values()), np.int64, len(user_rows))
        return BatchPlan(
            out,
            b"".join(chunks),
            len(chunks),
            txs,
            list(user_rows),
            replies,
            n_gets,
            np.fromiter(chain.from_iterable(user_rows.values()), np.intp, n),
            np.concatenate(([0], np.cumsum(user_counts))),
            np.fromiter(chain.from_iterable(merchant_rows.values()), np.intp, n),
            readonly,
        )

    def finish(self, plan: BatchPlan, replies: Sequence[Any]) -> tuple[np.ndarray, UserWrites]:
        """The batch's feature matrix from the replies to its reads, and the writes of the
        users it changed (not sent: the caller sends them, then `check_writes`)."""
        writes = self.finish_users(plan, replies[: plan.n_gets])
        plan.fill_merchants(replies[plan.n_gets :])
        return plan.out, writes

    def finish_users(self, plan: BatchPlan, replies: Sequence[Any]) -> UserWrites:
        """The user features of the batch, from the states this process wrote and the
        replies to its GETs (the first plan.n_gets replies; Redis may still be busy with
        the merchant calls), and the writes of the users it changed."""
        n_users = len(plan.users)
        bases: list[bytes] = []
        expected: dict[int, bytes] = {}
        starts = np.full(n_users, -1, np.int64)
        at = 0
        written = self._written
        for u, user in enumerate(plan.users):
            mine = written.get(user)
            reply = plan.replies[u]
            if reply >= 0:
                fetched = replies[reply]
            elif mine is None:  # dropped from the cache since the plan: read it now
                fetched = self.client.get(self.user_key(user))
            else:
                fetched = None
            if mine is not None and (
                fetched is None or fetched[0] != FORMAT or _version(fetched) <= _version(mine)
            ):
                base = mine
                expected[u] = mine[VERSION_BYTES]
            elif fetched is None:
                continue
            elif fetched[0] == FORMAT:
                if len(fetched) != 8 * state_words(fetched):
                    raise ValueError(
                        f"user state {self.user_key(user)!r} is corrupt: {len(fetched)} bytes, "
                        f"its header says {8 * state_words(fetched)}"
                    )
                base = fetched
                expected[u] = fetched[VERSION_BYTES]
            else:  # written by the Lua script of formats 1-3: read once, then format 4
                base = encode_state(decode_legacy(fetched))
                expected[u] = fetched
            starts[u] = at
            at += len(base) >> 3
            bases.append(base)
        new_words, new_start, new_len = self._run_kernel(plan, b"".join(bases), starts)
        if plan.readonly:
            return UserWrites(b"", 0, [])
        arena = new_words.tobytes()
        chunks: list[bytes] = []
        users: list[str] = []
        head, tail = self._write_head, self._write_tail
        for u, start, length in zip(
            np.flatnonzero(new_start >= 0).tolist(),
            new_start[new_start >= 0].tolist(),
            new_len[new_start >= 0].tolist(),
            strict=True,
        ):
            user = plan.users[u]
            state = arena[8 * start : 8 * (start + length)]
            key = self.user_key(user).encode()
            was = expected.get(u, b"")
            chunks.append(
                b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b"
                % (head, len(key), key, len(was), was, len(state), state, tail)
            )
            users.append(user)
            written[user] = state
            written.move_to_end(user)
        while len(written) > WRITTEN_CACHE_USERS:
            written.popitem(last=False)
        return UserWrites(b"".join(chunks), len(chunks), users)

    def check_writes(self, writes: UserWrites, replies: Sequence[Any]) -> None:
        """Raise UserStateConflict if any compare-and-set of `writes` was refused."""
        refused = [user for user, reply in zip(writes.users, replies, strict=True) if reply != 1]
        if refused:
            self.forget_written()
            raise UserStateConflict(refused)

    def _run_kernel(
        self, plan: BatchPlan, states: bytes, starts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        txs = plan.txs
        n = len(txs)
        # Read-only (a view of the bytes), also when empty: one compiled signature.
        words = np.frombuffer(states, "<i8")
        lat = np.fromiter((math.nan if tx.lat is None else tx.lat for tx in txs), np.float64, n)
        lon = np.fromiter((math.nan if tx.lon is None else tx.lon for tx in txs), np.float64, n)
        capacity = (
            words.shape[0]
            + len(plan.users) * HEADER_WORDS
            + n * (RECENT_WORDS + DAY_WORDS + 2 * SEEN_WORDS)
        )
        new_words = np.empty(capacity, np.int64)
        new_start = np.empty(len(plan.users), np.int64)
        new_len = np.empty(len(plan.users), np.int64)
        user_out = np.empty((n, _USER_WIDTH), np.float64)
        run_users(
            words, words.view(np.float64), starts, plan.user_tx, plan.user_rows,
            transaction_ids(txs),
            np.fromiter((tx.ts_ms for tx in txs), np.int64, n),
            np.fromiter((tx.cents for tx in txs), np.int64, n),
            lat, lon, plan.readonly,
            user_out, new_words, new_words.view(np.float64), new_start, new_len,
        )  # fmt: skip
        plan.out[:, _USER_SLICE] = user_out
        return new_words, new_start, new_len

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
    """A batch's reads, and the feature matrix their replies complete."""

    out: np.ndarray
    request: bytes  # RESP: a GET per user, then a script call per merchant
    calls: int
    txs: Sequence[TxnInput]
    users: list[str]  # in request order
    replies: list[int]  # per user: the index of its GET's reply, -1 = not read (cached)
    n_gets: int  # the first n_gets replies answer GETs, the rest merchant calls
    user_rows: np.ndarray  # rows of `out`, grouped by user in request order
    user_tx: np.ndarray  # user u's rows are user_rows[user_tx[u]:user_tx[u + 1]]
    merchant_rows: np.ndarray  # rows the merchant replies answer for, in reply order
    readonly: bool

    def fill_merchants(self, replies: Sequence[bytes]) -> None:
        """Write the merchant replies (8 little-endian doubles a transaction) into the
        matrix, with one assignment."""
        data = b"".join(replies)
        rows = self.merchant_rows
        if len(data) != 8 * _MERCHANT_WIDTH * len(rows):
            raise ValueError(
                f"merchant replies hold {len(data)} bytes, "
                f"expected {len(rows)} x {_MERCHANT_WIDTH} doubles"
            )
        # + 0.0 turns a -0.0 into 0.0, as msgpack (which carried it as integer 0) did.
        self.out[rows, _MERCHANT_SLICE] = (
            np.frombuffer(data, "<f8").reshape(len(rows), _MERCHANT_WIDTH) + 0.0
        )


@dataclass(frozen=True)
class UserWrites:
    """The compare-and-set calls of the users a batch changed."""

    request: bytes
    calls: int
    users: list[str]


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


def _version(state: bytes) -> int:
    """A format-4 state's version word."""
    return int.from_bytes(state[VERSION_BYTES], "little")


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
