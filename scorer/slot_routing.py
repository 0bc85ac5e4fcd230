"""Redis Cluster routing: each command to the master serving its key's hash slot, one
pipelined request per node, every node's request in flight at once.

The feature store builds a batch's commands as RESP, each touching the keys of one hash
slot (the {user} or {merchant} hash tag). `SlotRouter.run` groups them by the master that
serves their slot, writes every node's request before reading any reply (one round trip
per node per batch, side by side), and hands the replies back in command order, as one
node would have answered them.

While slots move, a node answers a command it did not execute with a redirection:
MOVED (the slot has a new owner, after a failover or a finished resharding: the slot map
is read again and the command sent there) or ASK (the slot is being migrated and this key
has gone: the command is sent once to the target, after ASKING). Resending is safe either
way, since the command did not run; the feature store's commands are idempotent besides.
A reply error of another kind is raised once every reply of the batch has been read, so
no connection is left with unread replies. The errors of a cluster in the middle of a
failover (CLUSTERDOWN, TRYAGAIN, a master that refuses connections) are raised as
redis.ConnectionError, which callers already retry; the slot map is read again before
the next request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ResponseError

from fraudcore.logs import kv
from scorer.resp import ReplyReader

CLUSTER_SCHEME = "redis+cluster"
# Redirections followed for one command before giving up (a slot moved twice while one
# batch was in flight is already unusual).
MAX_REDIRECTIONS = 5
_ASKING = b"*1\r\n$6\r\nASKING\r\n"

Address = tuple[str, int]


class ReplicaLagError(redis.TimeoutError):
    """Fewer replicas than asked for acknowledged a batch's writes in time (the writes
    are on the master; the caller must not count them confirmed)."""


class ClusterUnavailable(redis.ConnectionError):
    """The cluster cannot serve a slot now (a master lost, its failover not finished)."""


# Reply errors that mean "not now": the slot has no serving master yet, or is mid-move.
_RETRIABLE = ("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING")


def cluster_seeds(url: str) -> list[Address] | None:
    """The nodes named by a redis+cluster://host:port,host:port URL; None for a URL of
    any other scheme (a single Redis)."""
    if urlsplit(url).scheme != CLUSTER_SCHEME:
        return None
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    seeds = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL: {part!r} is not host:port in {url!r}")
        seeds.append((host, int(port)))
    return seeds


class SlotRouter:
    """The masters of one Redis Cluster and which of them serves each hash slot."""

    def __init__(self, seeds: Sequence[Address], socket_timeout_s: float = 10.0) -> None:
        if not seeds:
            raise ValueError("a Redis Cluster needs at least one seed node")
        self._seeds = list(seeds)
        self._timeout = socket_timeout_s
        self._clients: dict[Address, redis.Redis] = {}
        self.masters: list[Address] = []
        self._owner = np.full(REDIS_CLUSTER_HASH_SLOTS, -1, np.int16)
        self._stale = False  # read the slot map again before the next request
        self.refresh()

    def client(self, address: Address) -> redis.Redis:
        found = self._clients.get(address)
        if found is None:
            host, port = address
            found = self._clients[address] = redis.Redis(
                host=host, port=port, socket_timeout=self._timeout
            )
        return found

    def refresh(self) -> None:
        """Read the slot map (CLUSTER SLOTS) from the first node that answers: the known
        masters first, then the seeds."""
        failures = []
        for address in dict.fromkeys([*self.masters, *self._seeds]):
            try:
                ranges = self.client(address).execute_command("CLUSTER SLOTS")
            except (redis.ConnectionError, redis.TimeoutError, ResponseError) as exc:
                failures.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            masters: list[Address] = []
            owner = np.full(REDIS_CLUSTER_HASH_SLOTS, -1, np.int16)
            for first, last, master, *_replicas in ranges:
                host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                node = (host or address[0], int(master[1]))
                if node not in masters:
                    masters.append(node)
                owner[first : last + 1] = masters.index(node)
            self.masters, self._owner = masters, owner
            self._stale = False
            return
        raise redis.ConnectionError(
            f"no node of the Redis Cluster answered CLUSTER SLOTS {kv(tried=failures)}"
        )

    def owner(self, key: bytes) -> Address:
        index = int(self._owner[key_slot(key)])
        if index < 0:
            self._stale = True
            raise ClusterUnavailable(f"no master serves the slot of {key!r}")
        return self.masters[index]

    def run(
        self,
        commands: Sequence[bytes],
        keys: Sequence[bytes],
        *,
        replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> list[Any]:
        """The replies to `commands` (RESP, the i-th touching key `keys[i]`'s slot) in
        their order.

        With `replicas`, each node's request ends with WAIT: the call returns only once
        that many replicas of every master written to hold its writes, and raises
        ReplicaLagError when one does not within `wait_timeout_ms`. Replication is
        asynchronous otherwise: a replica promoted after its master died may lack what
        the master confirmed."""
        if self._stale:
            self.refresh()
        wait = command(b"WAIT", b"%d" % replicas, b"%d" % wait_timeout_ms) if replicas else None
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        asked: dict[int, Address] = {}
        for _ in range(MAX_REDIRECTIONS + 1):
            by_node: dict[Address, list[int]] = {}
            for i in pending:
                by_node.setdefault(asked.get(i) or self.owner(keys[i]), []).append(i)
            pending, moved = [], False
            failure: redis.RedisError | None = None
            try:
                exchanged = self._exchange(by_node, commands, asked, wait)
            except (redis.ConnectionError, redis.TimeoutError):
                self._stale = True  # a master may have died: its replica is promoted
                raise
            for node, (indexes, answers, acknowledged) in exchanged.items():
                # A node that redirected every command wrote nothing: its WAIT is moot (a
                # demoted master even refuses WAIT, as a replica).
                executed = any(not _redirection(a) for a in answers)
                if wait is not None and executed and failure is None:
                    if isinstance(acknowledged, ResponseError):
                        self._stale = True
                        failure = ClusterUnavailable(f"{node[0]}:{node[1]}: WAIT {acknowledged}")
                    elif acknowledged < replicas:
                        failure = ReplicaLagError(
                            f"{acknowledged} of {replicas} replicas of {node[0]}:{node[1]} "
                            f"acknowledged its writes within {wait_timeout_ms} ms"
                        )
                for i, answer in zip(indexes, answers, strict=True):
                    if not isinstance(answer, ResponseError):
                        replies[i] = answer
                        continue
                    kind, _, rest = str(answer).partition(" ")
                    if kind in ("MOVED", "ASK"):
                        host, _, port = rest.split(" ")[1].rpartition(":")
                        target = (host or node[0], int(port))
                        pending.append(i)
                        if kind == "ASK":
                            asked[i] = target
                        else:
                            asked.pop(i, None)
                            moved = True
                    elif failure is None and kind in _RETRIABLE:
                        self._stale = True
                        failure = ClusterUnavailable(f"{node[0]}:{node[1]}: {answer}")
                    elif failure is None:
                        failure = answer
            if failure is not None:
                raise failure
            if not pending:
                return replies
            if moved:
                self.refresh()
        raise ResponseError(
            f"still redirected after {MAX_REDIRECTIONS} redirections {kv(commands=len(pending))}"
        )

    def _exchange(
        self,
        by_node: dict[Address, list[int]],
        commands: Sequence[bytes],
        asked: dict[int, Address],
        wait: bytes | None,
    ) -> dict[Address, tuple[list[int], list[Any], Any]]:
        """Every node's commands (and `wait`) written first, then every node's replies
        read: the nodes work on their requests at the same time. Per node: the command
        indexes, their replies and WAIT's answer (0 without one; a count or an error)."""
        sent: list[tuple[Address, list[int], Any, Any]] = []
        try:
            for node, indexes in by_node.items():
                pool = self.client(node).connection_pool
                connection = pool.get_connection()
                sent.append((node, indexes, pool, connection))
                request = b"".join(
                    _ASKING + commands[i] if i in asked else commands[i] for i in indexes
                ) + (wait or b"")
                connection.send_packed_command([request], check_health=False)
            out = {}
            for node, indexes, _, connection in sent:
                asking = sum(1 for i in indexes if i in asked)
                expected = len(indexes) + asking + (wait is not None)
                answers = ReplyReader(connection).read(expected, raise_errors=False)
                acknowledged = answers.pop() if wait is not None else 0
                if asking:
                    answers = _without_asking_replies(answers, [i in asked for i in indexes])
                out[node] = (indexes, answers, acknowledged)
            return out
        except BaseException:
            for _, _, _, connection in sent:
                connection.disconnect()  # replies may be left unread on it
            raise
        finally:
            for _, _, pool, connection in sent:
                pool.release(connection)


def _redirection(answer: Any) -> bool:
    return isinstance(answer, ResponseError) and str(answer).startswith(("MOVED ", "ASK "))


def _without_asking_replies(answers: list[Any], asked: list[bool]) -> list[Any]:
    """The commands' replies, ASKING's +OK (the reply before an asked command's) left out."""
    flat = iter(answers)
    out = []
    for was_asked in asked:
        if was_asked:
            next(flat)
        out.append(next(flat))
    return out


def command(*parts: bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)
