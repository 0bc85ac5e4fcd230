"""Online features: the scorer's view of per-user and per-merchant state in Redis.

One pipeline, so one Redis round trip, per batch to read: a GET per user the batch
touches, unless this process wrote that user's state itself lately, and a script call
per merchant (merchants are shared across partitions, so their counts are kept by an
atomic script in Redis, scorer/lua/merchant.lua, which answers what they were). The
features are computed here by the engine the trainer runs too: fraudcore/user_kernel.py
over the user states, fraudcore/merchant.py over the merchants' answers. The changed user
states go back in a second request, one compare-and-set per user
(scorer/lua/user_write.lua), which the caller confirms before it commits the batch.
Every call touches the keys of one hash slot only (the {user} or {merchant} hash tag).
Given a SlotRouter (REDIS_URL redis+cluster://...) instead of one Redis, each request is
split by the master serving each call's slot, one pipelined request per master, all in
flight at once (scorer/slot_routing.py); with `replica_acks`, a request returns only once
that many replicas of each master it wrote to hold its writes.

Idempotent: a replayed transaction (same transaction_id, e.g. after a crash before the
Kafka transaction committed) gets the feature vector it got the first time and changes
nothing; merchant counts skip any source offset already counted.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any

import msgpack
import numpy as np
import redis
from redis.exceptions import NoScriptError

from fraudcore.features import (
    FEATURE_NAMES,
    MERCHANT_COLUMNS,
    USER_COLUMNS,
    TxnInput,
    derive_columns,
    fill_event_columns,
)
from fraudcore.logs import kv
from fraudcore.merchant import compute_merchants
from fraudcore.user_kernel import compute_users, group_rows
from fraudcore.user_state import StateKind, classify, fence, version
from scorer import metrics
from scorer.resp import ReplyReader
from scorer.slot_routing import SlotRouter

logger = logging.getLogger(__name__)


def _script(name: str) -> str:
    source = resources.files("scorer").joinpath("lua", f"{name}.lua").read_text()
    if name in _MERCHANT_SCRIPTS:
        layout = resources.files("scorer").joinpath("lua", "merchant_state.lua").read_text()
        return layout + source
    return source


# The scripts that share merchant_state.lua, the merchant state's layout.
_MERCHANT_SCRIPTS = frozenset({"merchant", "label"})


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
# A deployment of a new feature set resets every user it meets: one log line in this many.
RESET_LOG_EVERY = 10_000


class FeatureStore:
    def __init__(
        self,
        client: redis.Redis | SlotRouter,
        key_prefix: str = "fx",
        ttl_s: int = 35 * 86400,
        *,
        replica_acks: int = 0,
    ):
        self.router = client if isinstance(client, SlotRouter) else None
        self.client = client if isinstance(client, redis.Redis) else None
        if replica_acks and self.router is None:
            raise ValueError("replica_acks needs a Redis Cluster (REDIS_URL redis+cluster://)")
        self.replica_acks = replica_acks
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
        self._resets = 0

    def load_scripts(self) -> None:
        """Load the scripts into the Redis, or into every master of the cluster (a replica
        promoted since, or a master added by resharding, answers NOSCRIPT: `_run` loads
        them again then)."""
        if self.router is not None:
            self.router.refresh()
        nodes = [self._node(m) for m in self.router.masters] if self.router else [self.single_node]
        for node in nodes:
            for name, source in self._sources.items():
                sha = str(node.script_load(source))
                if sha != self._sha[name]:
                    raise RuntimeError(f"redis answered sha {sha} for script {name!r}, not SHA-1")

    @property
    def single_node(self) -> redis.Redis:
        """The one Redis (a store not on a cluster)."""
        if self.client is None:
            raise RuntimeError("this feature store routes across a Redis Cluster")
        return self.client

    def _node(self, address: tuple[str, int]) -> redis.Redis:
        assert self.router is not None
        return self.router.client(address)

    def _redis_for(self, key: str) -> redis.Redis:
        """The Redis holding `key`: the one Redis, or the master serving its slot."""
        if self.router is None:
            return self.single_node
        return self._node(self.router.owner(key.encode()))

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:u:{{{user_id}}}"

    def merchant_key(self, merchant_id: str) -> str:
        return f"{self.prefix}:m:{{{merchant_id}}}"

    def merchant_state(self, merchant_id: str) -> MerchantSnapshot:
        """The merchant's state as stored (for tests and operators)."""
        key = self.merchant_key(merchant_id)
        stored = self._redis_for(key).hgetall(key)
        days = np.frombuffer(stored.get(b"days", b""), "<i4").reshape(-1, 2)
        marks = {
            field.decode().removeprefix("mark:"): int(value)
            for field, value in stored.items()
            if field.startswith(b"mark:")
        }
        frauds = msgpack.unpackb(stored.get(b"fraud_ids", b"\x80"))
        return MerchantSnapshot(
            {int(day): int(count) for day, count in days}, marks, dict(frauds or {})
        )

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
        out, writes = self.finish(plan, self.run_reads(plan))
        if writes.calls:
            self.check_writes(writes, self.run_writes(writes))
        return out

    def run_reads(self, plan: BatchPlan) -> list[Any]:
        """Send a batch's reads and return their replies (one round trip per node)."""
        return self._run(plan.commands, plan.keys)

    def run_writes(self, writes: UserWrites) -> list[Any]:
        """Send a batch's user-state writes and return their replies, for `check_writes`."""
        return self._run(writes.commands, writes.keys)

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
            return BatchPlan(
                out,
                [],
                [],
                txs,
                _NO_TS,
                [],
                [],
                0,
                _NO_ROWS,
                _NO_ROWS,
                _NO_ROWS,
                _NO_ROWS,
                readonly,
            )
        if positions is None:
            if not readonly:
                raise ValueError("positions are required to update merchant state")
            positions = [SourcePosition("readonly:0", -1)] * n
        users, user_rows, user_tx = group_rows([tx.user_id for tx in txs])
        merchants, merchant_rows, merchant_tx = group_rows([tx.merchant_id for tx in txs])
        ts = np.fromiter((tx.ts_ms for tx in txs), np.int64, n)
        fill_event_columns(out, ts, np.fromiter((tx.cents for tx in txs), np.int64, n))
        chunks: list[bytes] = []
        keys: list[bytes] = []
        append, append_key = chunks.append, keys.append
        written = self._written
        replies: list[int] = []
        for user in users:
            if not readonly and user in written:
                replies.append(-1)
                continue
            replies.append(len(chunks))
            key = self.user_key(user).encode()
            append(b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key))
            append_key(key)
        n_gets = len(chunks)
        pack = self._pack
        template = self._merchant_call_readonly if readonly else self._merchant_call
        rows = merchant_rows.tolist()
        bounds = merchant_tx.tolist()
        for m, merchant_id in enumerate(merchants):
            group: list[Any] = []
            for i in rows[bounds[m] : bounds[m + 1]]:
                position = positions[i]
                group += (txs[i].ts_ms, position.source, position.offset)
            key = self.merchant_key(merchant_id).encode()
            args = pack(group)
            append(template % (len(key), key, len(args), args))
            append_key(key)
        return BatchPlan(
            out,
            chunks,
            keys,
            txs,
            ts,
            users,
            replies,
            n_gets,
            user_rows,
            user_tx,
            merchant_rows,
            merchant_tx,
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
        states: list[bytes | None] = []
        versions: list[int] = []
        fences: list[bytes] = []
        written = self._written
        for u, user in enumerate(plan.users):
            mine = written.get(user)
            reply = plan.replies[u]
            if reply >= 0:
                fetched = replies[reply]
            elif mine is None:  # dropped from the cache since the plan: read it now
                user_key = self.user_key(user)
                fetched = self._redis_for(user_key).get(user_key)
            else:
                fetched = None
            if mine is not None and (fetched is None or version(fetched) <= version(mine)):
                base: bytes | None = mine
            elif fetched is None:
                base = None
            elif (kind := classify(fetched)) is StateKind.CURRENT:
                base = fetched
            else:
                self._reset(user, fetched, kind)
                states.append(None)
                versions.append(version(fetched))
                fences.append(fence(fetched))
                continue
            states.append(base)
            versions.append(0 if base is None else version(base))
            fences.append(fence(base))
        result = compute_users(
            plan.txs, plan.user_rows, plan.user_tx, states, versions, readonly=plan.readonly
        )
        plan.out[:, USER_COLUMNS] = result.features
        if plan.readonly:
            return UserWrites([], [], [])
        chunks: list[bytes] = []
        keys: list[bytes] = []
        users: list[str] = []
        head, tail = self._write_head, self._write_tail
        for u, state in enumerate(result.states):
            if state is None:
                continue
            user = plan.users[u]
            key = self.user_key(user).encode()
            was = fences[u]
            chunks.append(
                b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b"
                % (head, len(key), key, len(was), was, len(state), state, tail)
            )
            keys.append(key)
            users.append(user)
            written[user] = state
            written.move_to_end(user)
        while len(written) > WRITTEN_CACHE_USERS:
            written.popitem(last=False)
        return UserWrites(chunks, keys, users)

    def _reset(self, user: str, state: bytes, kind: StateKind) -> None:
        """A state this scorer cannot read as its own: the user starts afresh."""
        metrics.user_states_reset.labels(kind.value).inc()
        self._resets += 1
        if self._resets == 1 or self._resets % RESET_LOG_EVERY == 0:
            logger.warning(
                "user state of another kind: the user starts afresh %s",
                kv(key=self.user_key(user), kind=kind.value, bytes=len(state),
                   first_byte=state[:1].hex(), resets_so_far=self._resets),
            )  # fmt: skip

    def check_writes(self, writes: UserWrites, replies: Sequence[Any]) -> None:
        """Raise UserStateConflict if any compare-and-set of `writes` was refused."""
        refused = [user for user, reply in zip(writes.users, replies, strict=True) if reply != 1]
        if refused:
            self.forget_written()
            raise UserStateConflict(refused)

    def fold_label(
        self, merchant_id: str, transaction_id: str, label: str, available_ms: int
    ) -> bool:
        """Count a fraud label for its merchant (once per transaction)."""
        return self.fold_labels([(merchant_id, transaction_id, label, available_ms)]) == 1

    def fold_labels(self, labels: Sequence[tuple[str, str, str, int]]) -> int:
        """Fold many labels in one round trip; returns how many were newly counted."""
        if not labels:
            return 0
        keys = [self.merchant_key(m) for m, _, _, _ in labels]
        commands = [
            ("label", "1", key, txid, label, str(available), self.ttl_ms)
            for key, (_, txid, label, available) in zip(keys, labels, strict=True)
        ]
        replies = self._run(_encode(commands, self._sha), [k.encode() for k in keys])
        return sum(int(r) for r in replies)

    def _run(self, commands: list[bytes], keys: list[bytes]) -> list[Any]:
        """The replies to `commands` (RESP, the i-th touching `keys[i]`), in order: sent
        joined, as one request, to the one Redis, or routed by slot across the cluster. If Redis lost the scripts (a restart, a promoted replica), they are
        reloaded and the commands sent once more, which is safe because every script is
        idempotent (a user-state write that did land is refused the second time, as a
        conflict: the batch is computed again)."""
        for attempt in (1, 2):
            try:
                if self.router is not None:
                    return self.router.run(commands, keys, replicas=self.replica_acks)
                return self._send(b"".join(commands), len(commands))
            except NoScriptError:
                if attempt == 2:
                    raise
                logger.warning("redis lost the feature scripts; reloading %s", kv(attempt=attempt))
                self.load_scripts()
        raise AssertionError("unreachable")

    def _send(self, request: bytes, calls: int) -> list[Any]:
        pool = self.single_node.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([request], check_health=False)
            return ReplyReader(connection).read(calls)
        except BaseException:
            connection.disconnect()  # later replies of this request may be unread
            raise
        finally:
            pool.release(connection)


_NO_ROWS = np.empty(0, dtype=np.intp)
_NO_TS = np.empty(0, dtype=np.int64)


class _Commands:
    """RESP commands, each with its key: sent joined to one Redis, or by slot."""

    commands: list[bytes]

    @property
    def calls(self) -> int:
        return len(self.commands)

    @cached_property
    def request(self) -> bytes:
        """The commands as one request, for a single Redis."""
        return b"".join(self.commands)


@dataclass(frozen=True)
class BatchPlan(_Commands):
    """A batch's reads, and the feature matrix their replies complete."""

    out: np.ndarray
    commands: list[bytes]  # RESP: a GET per user, then a script call per merchant
    keys: list[bytes]  # the key of each command
    txs: Sequence[TxnInput]
    ts: np.ndarray  # per transaction: event time, ms
    users: list[str]  # in request order
    replies: list[int]  # per user: the index of its GET's reply, -1 = not read (cached)
    n_gets: int  # the first n_gets replies answer GETs, the rest merchant calls
    user_rows: np.ndarray  # rows of `out`, grouped by user in request order
    user_tx: np.ndarray  # user u's rows are user_rows[user_tx[u]:user_tx[u + 1]]
    merchant_rows: np.ndarray  # rows of `out`, grouped by merchant in request order
    merchant_tx: np.ndarray
    readonly: bool

    def fill_merchants(self, replies: Sequence[bytes]) -> None:
        """The merchant features from the merchants' records (fraudcore/merchant.py),
        then the derived ones: the matrix is complete."""
        self.out[:, MERCHANT_COLUMNS] = compute_merchants(
            b"".join(replies), self.merchant_tx, self.merchant_rows, self.ts
        )
        derive_columns(self.out)


@dataclass(frozen=True)
class UserWrites(_Commands):
    """The compare-and-set calls of the users a batch changed."""

    commands: list[bytes]
    keys: list[bytes]  # the key of each command
    users: list[str]


@dataclass(frozen=True)
class MerchantSnapshot:
    days: dict[int, int]
    marks: dict[str, int]
    frauds: dict[str, int]


def _call_template(sha: str, readonly: str, ttl_ms: str) -> bytes:
    """EVALSHA <sha> 1 <key> <args> <readonly> <ttl> with %-slots for key and args."""
    return (
        b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n" % sha.encode()
        + b"$%d\r\n%b\r\n$%d\r\n%b\r\n"
        + b"$%d\r\n%b\r\n$%d\r\n%b\r\n"
        % (len(readonly), readonly.encode(), len(ttl_ms), ttl_ms.encode())
    )


def _encode(commands: Sequence[tuple[Any, ...]], sha: dict[str, str]) -> list[bytes]:
    """RESP arrays for EVALSHA <sha> <args...>, one per command (the array header and the
    sha are the same for every call of a script: built once per batch)."""
    encoded: list[bytes] = []
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
        parts = [head]
        for part in command[1:]:
            data = part.encode() if type(part) is str else part
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
        encoded.append(b"".join(parts))
    return encoded
