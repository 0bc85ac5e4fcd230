"""Two scorers on the cluster profile's three brokers and Redis Cluster, as deployed there
(REDIS_URL=redis+cluster://..., one replica of each master acknowledging a batch's
writes), with its nodes killed mid-stream: the committed scores and alerts equal the
uninterrupted single-node run's, message for message (features included), and every
merchant counted each of its transactions once.

Marked `cluster` (`make test-cluster`): the nodes are the cluster profile's own, started
unless running and stopped afterwards only if this module started them. MLflow is the
shared test stack's.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from confluent_kafka.admin import AdminClient

from bench.deployment import Deployment, ServiceProcess
from launcher.layout import layout_for
from launcher.runner import Launcher
from scorer.feature_store import FeatureStore
from scorer.slot_routing import SlotRouter, cluster_seeds
from tests.kafka_util import produce_records
from tests.private_stack import PrivateStack
from tests.redis_cluster_nodes import node_id
from tests.scorer.harness import wait_until
from tests.scorer.reference import OneDay, assert_same_output, committed_scores
from tests.stack import TestStack

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

NODES = [f"kafka-{i}" for i in (1, 2, 3)] + [f"redis-{i}" for i in range(1, 7)]
DOWN_S = 8.0  # how long a killed broker stays dead


@dataclass(frozen=True)
class ClusterStack:
    addresses: TestStack  # the cluster's brokers and Redis Cluster, the test MLflow
    nodes: PrivateStack  # kill and start its nodes


@pytest.fixture(scope="module")
def cluster(stack: TestStack) -> Iterator[ClusterStack]:
    layout = layout_for("cluster")
    launcher = Launcher(layout)
    try:
        launcher.up(NODES)
        addresses = TestStack(
            kafka_bootstrap=layout.kafka_bootstrap,
            redis_url=layout.redis_cluster_url,
            mlflow_uri=stack.mlflow_uri,
        )
        yield ClusterStack(addresses, PrivateStack(launcher))
    finally:
        if launcher.started:
            launcher.down(launcher.started)


def _two_scorers(world: Deployment) -> list[ServiceProcess]:
    """Two scorers under the supervisor, as the launcher runs them: a scorer whose Kafka
    client hangs after a broker restart (librdkafka #5456) exits and is started again."""
    scorers = [world.start_scorer(f"cluster-{i}", supervised=True) for i in (1, 2)]
    for scorer in scorers:
        scorer.wait_ready()
    return scorers


def _committed(scorers: list[ServiceProcess]) -> float:
    total = 0.0
    for scorer in scorers:
        with contextlib.suppress(httpx.HTTPError):  # one restarting: counted next time
            total += committed_scores(scorer)
    return total


def _strike_mid_stream(
    world: Deployment, scorers: list[ServiceProcess], one_day: OneDay, strike: Callable[[], None]
) -> None:
    """The first chunk committed, the second begun: strike, then the rest of the stream."""
    records = one_day.records
    chunks = [records[i : i + 300] for i in range(0, len(records), 300)]
    produce_records(world.kafka, world.transactions, chunks[0])
    wait_until(lambda: _committed(scorers) >= len(chunks[0]), 120, "the first chunk")
    produce_records(world.kafka, world.transactions, chunks[1])
    deadline = time.monotonic() + 60
    while _committed(scorers) <= len(chunks[0]) and time.monotonic() < deadline:
        time.sleep(0.002)
    strike()
    for chunk in chunks[2:]:
        produce_records(world.kafka, world.transactions, chunk)
    # The caller's assert_same_output waits for every score on the topic: a scorer the
    # supervisor restarted counts from zero again, so its metric cannot tell the end.


def _assert_recovered(world: Deployment, scorers: list[ServiceProcess], one_day: OneDay,
                      cluster: ClusterStack) -> None:  # fmt: skip
    """The uninterrupted output committed, and both supervisors still up."""
    assert_same_output(world, world.kafka, cluster.addresses, one_day)
    for scorer in scorers:
        assert scorer.proc.poll() is None, f"a scorer's supervisor exited:\n{scorer.tail()}"


def _stop(scorers: list[ServiceProcess]) -> None:
    codes = [scorer.stop() for scorer in scorers]
    assert codes == [0] * len(scorers), "\n".join(s.tail() for s in scorers)


def test_two_scorers_on_the_cluster_commit_the_uninterrupted_output(
    make_world: Callable[..., Deployment], cluster: ClusterStack, one_day: OneDay
) -> None:
    world = make_world(partitions=6, on=cluster.addresses, SCORER_REDIS_REPLICA_ACKS="1")
    scorers = _two_scorers(world)
    try:
        produce_records(world.kafka, world.transactions, one_day.records)
        assert_same_output(world, world.kafka, cluster.addresses, one_day)
    finally:
        _stop(scorers)


def _busiest_master(world: Deployment, one_day: OneDay) -> str:
    """The Redis node (redis-N) that is master of the slots of most of the stream's users."""
    seeds = cluster_seeds(world.stack.redis_url)
    assert seeds is not None
    router = SlotRouter(seeds)
    store = FeatureStore(router, world.key_prefix)
    owners = Counter(router.owner(store.user_key(r["user_id"]).encode()) for r in one_day.records)
    (_host, port), _ = owners.most_common(1)[0]
    ports = layout_for("cluster").redis_cluster_ports
    return f"redis-{ports.index(port) + 1}"


def test_a_redis_master_killed_mid_stream_changes_no_output(
    make_world: Callable[..., Deployment], cluster: ClusterStack, one_day: OneDay
) -> None:
    """kill -9 the master of most users' slots right as batches are being written; its
    replica is promoted (cluster-node-timeout 5 s) and the old master comes back as its
    replica. Every batch committed before the kill was on the replica (WAIT 1), so the
    promoted state is complete and the output is an uninterrupted run's."""
    world = make_world(partitions=6, on=cluster.addresses, SCORER_REDIS_REPLICA_ACKS="1",
                       SCORER_BATCH_MAX_SIZE="20")  # fmt: skip
    victim = _busiest_master(world, one_day)
    scorers = _two_scorers(world)

    ports = layout_for("cluster").redis_cluster_ports
    victim_port = ports[int(victim.removeprefix("redis-")) - 1]
    replica_port = int(redis.Redis(port=victim_port).info("replication")["slave0"]["port"])

    def kill_and_restart_as_replica() -> None:
        cluster.nodes.kill(victim)
        replica = redis.Redis(port=replica_port)
        wait_until(lambda: replica.info("replication")["role"] == "master", 60,
                   f"the replica on {replica_port} to be promoted")  # fmt: skip
        cluster.nodes.start(victim)
        old = redis.Redis(port=victim_port)
        wait_until(lambda: old.info("replication").get("master_link_status") == "up", 60,
                   f"{victim} to be back as a replica")  # fmt: skip

    try:
        _strike_mid_stream(world, scorers, one_day, kill_and_restart_as_replica)
        _assert_recovered(world, scorers, one_day, cluster)
        logs = "".join(s.log.read_text() for s in scorers)
        assert "dependency=redis" in logs, "the scorers never saw the master go"
    finally:
        _stop(scorers)


def _broker_leading_most(world: Deployment) -> str:
    admin = AdminClient(world.kafka)
    topic = admin.list_topics(world.transactions, timeout=10).topics[world.transactions]
    leaders = Counter(p.leader for p in topic.partitions.values())
    return f"kafka-{leaders.most_common(1)[0][0]}"


def test_the_broker_leading_most_partitions_killed_mid_stream_changes_no_output(
    make_world: Callable[..., Deployment], cluster: ClusterStack, one_day: OneDay
) -> None:
    """SIGKILL the broker that leads most `transactions` partitions, start it again a few
    seconds later: leadership moves to the other two (three copies, two in sync needed),
    the scorers' transactions carry on or are aborted and redone, and nothing committed is
    lost or doubled."""
    world = make_world(partitions=6, on=cluster.addresses, SCORER_REDIS_REPLICA_ACKS="1",
                       SCORER_BATCH_MAX_SIZE="20")  # fmt: skip
    victim = _broker_leading_most(world)
    scorers = _two_scorers(world)

    def kill_then_restart() -> None:
        cluster.nodes.kill(victim)
        time.sleep(DOWN_S)
        cluster.nodes.start(victim)

    try:
        _strike_mid_stream(world, scorers, one_day, kill_then_restart)
        _assert_recovered(world, scorers, one_day, cluster)
    finally:
        _stop(scorers)


def _reshard(from_port: int, to_port: int, slots: int) -> None:
    """What an operator runs: redis-cli --cluster reshard, keys moved with their slots."""
    result = subprocess.run(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{from_port}",
         "--cluster-from", node_id(("127.0.0.1", from_port)),
         "--cluster-to", node_id(("127.0.0.1", to_port)),
         "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "50"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_slots_resharded_mid_stream_change_no_output(
    make_world: Callable[..., Deployment], cluster: ClusterStack, one_day: OneDay
) -> None:
    """A thousand slots of the busiest master move to another one while the scorers run
    (ASK while each slot migrates, MOVED once it has), then move back."""
    world = make_world(partitions=6, on=cluster.addresses, SCORER_REDIS_REPLICA_ACKS="1",
                       SCORER_BATCH_MAX_SIZE="20")  # fmt: skip
    ports = layout_for("cluster").redis_cluster_ports
    source = ports[int(_busiest_master(world, one_day).removeprefix("redis-")) - 1]
    masters = [p for p in ports if redis.Redis(port=p).info("replication")["role"] == "master"]
    target = next(p for p in masters if p != source)
    scorers = _two_scorers(world)
    moved = False
    try:

        def reshard() -> None:
            nonlocal moved
            _reshard(source, target, 1000)
            moved = True

        _strike_mid_stream(world, scorers, one_day, reshard)
        _assert_recovered(world, scorers, one_day, cluster)
    finally:
        _stop(scorers)
        if moved:
            _reshard(target, source, 1000)


def test_every_broker_rolled_one_at_a_time_changes_no_output(
    make_world: Callable[..., Deployment], cluster: ClusterStack, one_day: OneDay
) -> None:
    """A rolling restart: each broker stopped (SIGTERM) and started again in turn, the
    next one once no partition is under-replicated. The scorers carry on through each
    leadership move by themselves."""
    world = make_world(partitions=6, on=cluster.addresses, SCORER_REDIS_REPLICA_ACKS="1",
                       SCORER_BATCH_MAX_SIZE="50")  # fmt: skip
    admin = AdminClient(world.kafka)
    scorers = _two_scorers(world)

    def fully_replicated() -> bool:
        topics = admin.list_topics(timeout=10).topics
        return all(len(p.isrs) == len(p.replicas) for t in topics.values()
                   for p in t.partitions.values())  # fmt: skip

    def roll() -> None:
        for name in ("kafka-1", "kafka-2", "kafka-3"):
            cluster.nodes.stop(name)
            cluster.nodes.start(name)
            wait_until(fully_replicated, 120, f"every partition in sync after {name}")

    try:
        _strike_mid_stream(world, scorers, one_day, roll)
        _assert_recovered(world, scorers, one_day, cluster)
    finally:
        _stop(scorers)
