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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack
import numpy as np
import redis
from redis.exceptions import NoScriptError

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
        self._sha: dict[str, str] = {}
        self.load_scripts()

    def load_scripts(self) -> None:
        for name, source in self._sources.items():
            self._sha[name] = str(self.client.script_load(source))

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
        return plan.fill(self._run(plan.commands)) if plan.commands else plan.out

    def plan(
        self,
        txs: Sequence[TxnInput],
        positions: Sequence[SourcePosition] | None = None,
        *,
        readonly: bool = False,
    ) -> BatchPlan:
        """The script calls for a batch (one per user, one per merchant) and where their
        replies go; the stateless features are already filled in."""
        out = np.empty((len(txs), len(FEATURE_NAMES)), dtype=np.float64)
        if not txs:
            return BatchPlan(out, [], [], 0)
        if positions is None:
            if not readonly:
                raise ValueError("positions are required to update merchant state")
            positions = [SourcePosition("readonly:0", -1)] * len(txs)
        by_user: dict[str, list[int]] = {}
        by_merchant: dict[str, list[int]] = {}
        for i, tx in enumerate(txs):
            by_user.setdefault(tx.user_id, []).append(i)
            by_merchant.setdefault(tx.merchant_id, []).append(i)
        out[:, : _USER_SLICE.start] = stateless_matrix(
            np.fromiter((tx.ts_ms for tx in txs), np.int64, len(txs)),
            np.fromiter((tx.cents for tx in txs), np.int64, len(txs)),
        )
        flag = "1" if readonly else "0"
        commands: list[tuple[Any, ...]] = []
        for user_id, rows in by_user.items():
            events = []
            for i in rows:
                tx = txs[i]
                lat, lon = tx.lat, tx.lon  # false, not nil: a nil would end the Lua array
                events.append(
                    (
                        tx.transaction_id,
                        tx.ts_ms,
                        tx.cents,
                        tx.merchant_id,
                        tx.country,
                        False if lat is None else lat,
                        False if lon is None else lon,
                        tx.device,
                    )
                )
            args = msgpack.packb(events)
            commands.append(("user", "1", self.user_key(user_id), args, flag, self.ttl_ms))
        for merchant_id, rows in by_merchant.items():
            args = msgpack.packb(
                [[txs[i].ts_ms, positions[i].source, positions[i].offset] for i in rows]
            )
            commands.append(
                ("merchant", "1", self.merchant_key(merchant_id), args, flag, self.ttl_ms)
            )
        groups = [*by_user.values(), *by_merchant.values()]
        return BatchPlan(out, commands, groups, len(by_user))

    def encode(self, commands: Sequence[tuple[Any, ...]]) -> bytes:
        return _encode(commands, self._sha)

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
        return sum(int(r) for r in self._run(commands))

    def _run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """EVALSHA every command in one round trip and return the replies in order.

        The RESP request is encoded here and written in one piece: redis-py's pipeline
        costs several microseconds a command, more than the scripts themselves. If Redis
        lost the scripts (a restart), they are reloaded and the batch is sent once more,
        which is safe because every script is idempotent."""
        for attempt in (1, 2):
            request = self.encode(commands)
            pool = self.client.connection_pool
            connection = pool.get_connection()
            try:
                connection.send_packed_command([request], check_health=False)
                replies = []
                for _ in commands:
                    replies.append(connection.read_response(disable_decoding=True))
                return replies
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


@dataclass(frozen=True)
class BatchPlan:
    """A batch's script calls, and the feature matrix their replies complete."""

    out: np.ndarray
    commands: list[tuple[Any, ...]]
    groups: list[list[int]]  # rows of `out` each call answers for, in call order
    n_users: int  # the first n_users calls are user calls, the rest merchant calls

    def fill(self, replies: Sequence[bytes]) -> np.ndarray:
        """Write the replies into the matrix: one assignment per kind of call."""
        user_rows: list[int] = []
        user_values: list[list[float]] = []
        merchant_rows: list[int] = []
        merchant_values: list[list[float]] = []
        for call, (rows, reply) in enumerate(zip(self.groups, replies, strict=True)):
            if call < self.n_users:
                user_rows += rows
                user_values += msgpack.unpackb(reply)
            else:
                merchant_rows += rows
                merchant_values += msgpack.unpackb(reply)
        if user_rows:
            self.out[user_rows, _USER_SLICE] = user_values
        if merchant_rows:
            self.out[merchant_rows, _MERCHANT_SLICE] = merchant_values
        return self.out


@dataclass(frozen=True)
class MerchantSnapshot:
    days: dict[int, int]
    marks: dict[str, int]
    frauds: dict[str, int]


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
