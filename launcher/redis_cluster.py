"""A Redis Cluster of redis-server nodes the launcher runs: forming it once (redis-cli
--cluster create), waiting until it serves every slot, and each node's role."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from fraudcore.logs import kv
from launcher.probes import PROBE_TIMEOUT_S, StartError, wait_until

logger = logging.getLogger(__name__)

SLOTS = 16384
# Each master gets one replica: three masters need six nodes.
REPLICAS_PER_MASTER = 1
CREATE_TIMEOUT_S = 60.0
# How long a created cluster may take to agree on its state (gossip, a restart's
# election): well past the node timeout below.
FORM_TIMEOUT_S = 60.0
# redis-server options of a cluster node. The node writes its view of the cluster into
# nodes.conf in its --dir, so a restarted node rejoins by itself. A 5 s node timeout
# (default 15 s) lets a replica take over a dead master within seconds.
NODE_OPTIONS = (
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "5000",
)  # fmt: skip


@dataclass(frozen=True)
class Node:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    master: bool
    myself: bool
    # Id of the master it replicates ("" for a master).
    master_id: str
    slots: int
    failed: bool


@dataclass(frozen=True)
class ClusterView:
    """The cluster as one node sees it."""

    state: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.master and not n.failed]

    def replicas_of(self, master: Node) -> list[Node]:
        return [n for n in self.nodes if n.master_id == master.node_id and not n.failed]

    @property
    def slots(self) -> int:
        return sum(n.slots for n in self.masters)

    def formed(self, masters: int) -> bool:
        """Serving every slot over `masters` masters, each with its replica."""
        return (
            self.state == "ok"
            and len(self.masters) == masters
            and self.slots == SLOTS
            and all(len(self.replicas_of(m)) >= REPLICAS_PER_MASTER for m in self.masters)
        )


def _slot_count(fields: Sequence[str]) -> int:
    count = 0
    for item in fields:
        if item.startswith("["):  # a slot being imported or migrated, not owned yet
            continue
        first, _, last = item.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def parse_nodes(text: str) -> list[Node]:
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        # ip:port@cport[,hostname]
        port = int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
        flags = parts[2].split(",")
        nodes.append(
            Node(
                node_id=parts[0],
                port=port,
                master="master" in flags,
                myself="myself" in flags,
                master_id="" if parts[3] == "-" else parts[3],
                slots=_slot_count(parts[8:]),
                failed="fail" in flags or "noaddr" in flags,
            )
        )
    return nodes


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=PROBE_TIMEOUT_S)


def view(port: int) -> ClusterView | None:
    """What node `port` knows of the cluster; None when it does not answer."""
    client = _client(port)
    try:
        info = client.execute_command("CLUSTER", "INFO")
        nodes = client.execute_command("CLUSTER", "NODES")
    except redis.RedisError:
        return None
    finally:
        client.close()
    info_text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in info_text.split() if ":" in line)
    nodes_text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
    return ClusterView(state=fields.get("cluster_state", ""), nodes=parse_nodes(nodes_text))


def role(port: int) -> str:
    """For status: "master (5461 slots)", "replica of :17001", or why neither."""
    seen = view(port)
    if seen is None:
        return ""
    me = next((n for n in seen.nodes if n.myself), None)
    if me is None or len(seen.nodes) == 1:
        return "not in a cluster yet"
    if me.master:
        return f"master ({me.slots} slots)"
    master = next((n for n in seen.nodes if n.node_id == me.master_id), None)
    return f"replica of :{master.port}" if master else "replica"


def formed(ports: Sequence[int]) -> bool:
    masters = len(ports) // (1 + REPLICAS_PER_MASTER)
    return all((v := view(p)) is not None and v.formed(masters) for p in ports)


def linked(port: int) -> bool:
    """A master, or a replica whose link to its master is up: a replica still in its
    first sync after a start acknowledges nothing (a WAIT for it would time out)."""
    client = _client(port)
    try:
        info = client.info("replication")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return info.get("role") == "master" or info.get("master_link_status") == "up"


def ensure_cluster(ports: Sequence[int]) -> None:
    """Form the cluster of `ports` unless its nodes already know each other, then wait
    until every node sees all slots served with a replica per master. Idempotent: a
    formed cluster (a second `up`, a restart from nodes.conf) is only waited for."""
    views = [view(p) for p in ports]
    if any(v is None for v in views):
        raise StartError(f"redis cluster: a node of {list(ports)} does not answer")
    joined = [p for p, v in zip(ports, views, strict=True) if v is not None and len(v.nodes) > 1]
    if not joined:
        _create(ports)
    elif len(joined) < len(ports):
        # Some nodes kept a nodes.conf and others lost theirs: joining a blank node to
        # a live cluster is an operator's decision (redis-cli --cluster add-node).
        lone = sorted(set(ports) - set(joined))
        raise StartError(
            f"redis cluster: nodes {lone} are not in the cluster the others form; "
            f"stop the profile and remove their data folders to form it again"
        )
    wait_until(
        lambda: formed(ports) and all(linked(p) for p in ports),
        what=f"redis cluster ({len(ports)} nodes, {SLOTS} slots, a replica per master, "
        "each replica's link to its master up)",
        timeout_s=FORM_TIMEOUT_S,
    )


def _create(ports: Sequence[int]) -> None:
    if shutil.which("redis-cli") is None:
        raise StartError("redis-cli not found: install redis-tools (make install does)")
    argv = [
        "redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
        "--cluster-replicas", str(REPLICAS_PER_MASTER), "--cluster-yes",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=CREATE_TIMEOUT_S)
    if result.returncode != 0:
        raise StartError(f"redis cluster create failed:\n{result.stdout[-3000:]}{result.stderr}")
    logger.info(
        "redis cluster created %s",
        kv(nodes=len(ports), took_s=f"{time.monotonic() - started:.1f}"),
    )
