"""The cluster profile's infrastructure, against the real processes: three KRaft nodes
and a six-node Redis Cluster started by the launcher (`make test-cluster`).

The profile itself (.run/cluster, the CLUSTER_* ports of .env): `launcher status
--profile cluster` is part of what is checked. Nodes already running (someone's
`make up-cluster`) are reused; the test stops only the nodes it started. Marked
`cluster`: plain `make test` leaves it out (its budget), and a cluster that does not
come up is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from fraudcore.kafka import ensure_topics
from fraudcore.settings import REPO_ROOT
from fraudcore.topics import TopicSpec
from launcher import kafka, process
from launcher.layout import Layout, layout_for
from launcher.runner import Launcher

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Cluster:
    layout: Layout
    # The cluster's nodes (the services with a role): kafka-1..3, redis-1..6.
    nodes: list[str]
    start_s: float


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    layout = layout_for("cluster")
    launcher = Launcher(layout)
    nodes = [s.name for s in launcher.services if s.role is not None]
    started = time.monotonic()
    try:
        launcher.up(nodes)
        took = time.monotonic() - started
        print(f"\ncluster nodes up in {took:.1f} s (started by this test: {launcher.started})")
        yield Cluster(layout, nodes, took)
    finally:
        # Only what this test started: a cluster someone else brought up stays up.
        if launcher.started:
            launcher.down(launcher.started)


def _admin(cluster: Cluster) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.layout.kafka_bootstrap})


def _pids(cluster: Cluster) -> dict[str, int]:
    launcher = Launcher(cluster.layout)
    pids = {}
    for name in cluster.nodes:
        record = process.read_pid_file(launcher.pid_file(name))
        assert record is not None and process.is_ours(record), f"{name} is not running"
        pids[name] = record.pid
    return pids


def test_the_profile_has_three_brokers_and_six_redis_nodes(cluster: Cluster) -> None:
    assert [n for n in cluster.nodes if n.startswith("kafka-")] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [n for n in cluster.nodes if n.startswith("redis-")] == [
        f"redis-{i}" for i in range(1, 7)
    ]
    assert len(cluster.layout.kafka_bootstrap.split(",")) == 3


def test_kraft_quorum_has_three_voters(cluster: Cluster) -> None:
    quorum = kafka.describe_quorum(cluster.layout.kafka_bootstrap)
    voters = json.loads(quorum["CurrentVoters"])
    assert sorted(v["id"] for v in voters) == [1, 2, 3], quorum
    assert int(quorum["LeaderId"]) in (1, 2, 3), quorum
    # Combined nodes: every broker is a voter, none only an observer.
    assert json.loads(quorum["CurrentObservers"]) == [], quorum
    metadata = _admin(cluster).list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3]


def test_stack_topics_have_three_copies_and_two_in_sync_for_a_write(cluster: Cluster) -> None:
    admin = _admin(cluster)
    metadata = admin.list_topics(timeout=10)
    assert cluster.layout.topics is not None
    name = cluster.layout.topics.topic_transactions
    topic = metadata.topics[name]
    assert len(topic.partitions) == cluster.layout.transactions_partitions
    for partition in topic.partitions.values():
        assert sorted(partition.replicas) == [1, 2, 3], (name, partition.id, partition.replicas)
        assert sorted(partition.isrs) == [1, 2, 3], (name, partition.id, partition.isrs)
    (config,) = admin.describe_configs([ConfigResource("topic", name)]).values()
    assert config.result(timeout=10)["min.insync.replicas"].value == "2"


def test_broker_configs_replicate_every_internal_topic(cluster: Cluster) -> None:
    admin = _admin(cluster)
    expected = {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
    }
    for node in ("1", "2", "3"):
        (future,) = admin.describe_configs([ConfigResource("broker", node)]).values()
        configs = future.result(timeout=10)
        assert {k: configs[k].value for k in expected} == expected, f"broker {node}"


def test_transactional_produce_and_read_committed_consume(cluster: Cluster) -> None:
    bootstrap = cluster.layout.kafka_bootstrap
    admin = _admin(cluster)
    topic = f"cluster-txn-{uuid.uuid4().hex[:12]}"
    assert ensure_topics(admin, [TopicSpec(topic, 3)], replicas=3) == [topic]
    try:
        producer = Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": f"test-{uuid.uuid4().hex}"}
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(50):
            producer.produce(topic, key=str(i % 7), value=f"committed-{i}")
        producer.commit_transaction(30)
        producer.begin_transaction()
        for i in range(20):
            producer.produce(topic, key=str(i), value=f"aborted-{i}")
        producer.flush(30)
        producer.abort_transaction(30)

        # The coordinator's log now exists, with the cluster's copies.
        state = admin.list_topics(timeout=10).topics["__transaction_state"]
        assert all(len(p.replicas) == 3 for p in state.partitions.values())

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"cluster-test-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        values: list[str] = []
        deadline = time.monotonic() + 60
        try:
            while len(values) < 50 and time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                assert message.error() is None, message.error()
                value = message.value()
                assert value is not None
                values.append(value.decode())
            # Past the committed batch, nothing of the aborted one may arrive.
            end = time.monotonic() + 3
            while time.monotonic() < end:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    value = message.value()
                    assert value is not None
                    values.append(value.decode())
        finally:
            consumer.close()
        assert sorted(values) == sorted(f"committed-{i}" for i in range(50))
    finally:
        admin.delete_topics([topic])


def _cluster_info(port: int) -> dict[str, str]:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        text = client.execute_command("CLUSTER", "INFO").decode()
    finally:
        client.close()
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def test_redis_cluster_has_three_masters_with_a_replica_each(cluster: Cluster) -> None:
    ports = cluster.layout.redis_cluster_ports
    assert len(ports) == 6
    for port in ports:
        info = _cluster_info(port)
        assert info["cluster_state"] == "ok", (port, info)
        assert info["cluster_slots_assigned"] == "16384", (port, info)
        assert info["cluster_slots_ok"] == "16384", (port, info)
        assert info["cluster_known_nodes"] == "6", (port, info)
        assert info["cluster_size"] == "3", (port, info)
        node = redis.Redis(host="127.0.0.1", port=port)
        try:
            config = node.config_get("append*")
            assert config["appendonly"] == "yes", port
            assert config["appendfsync"] == "everysec", port
            assert node.info("persistence")["aof_enabled"] == 1, port
        finally:
            node.close()

    client: redis.RedisCluster[bytes] = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    try:
        primaries = client.get_primaries()
        assert len(primaries) == 3
        assert len(client.get_replicas()) == 3
        for primary in primaries:
            replication = client.info("replication", target_nodes=primary)
            assert replication["role"] == "master"
            assert replication["connected_slaves"] == 1, primary
        # A key in every master's slots, routed by the cluster client.
        keys = {f"cluster-test:{uuid.uuid4().hex}:{i}": str(i) for i in range(60)}
        for key, value in keys.items():
            client.set(key, value, ex=60)
        assert {key: client.get(key) for key in keys} == {k: v.encode() for k, v in keys.items()}
        owners = {n.name for key in keys if (n := client.get_node_from_key(key)) is not None}
        assert len(owners) == 3, owners
        client.delete(*keys)
    finally:
        client.close()


def test_status_lists_every_node_with_its_role(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "status", "--profile", "cluster"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
        # Wide enough that rich puts each service on one line.
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        cells[0]: cells
        for line in result.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│┃").split("│")]) >= 6
    }
    for name in cluster.nodes:
        assert name in rows, result.stdout
        assert rows[name][3:5] == ["running", "yes"], rows[name]
    roles = [rows[f"redis-{i}"][5] for i in range(1, 7)]
    assert sum(r.startswith("master") for r in roles) == 3, roles
    assert sum(r.startswith("replica of") for r in roles) == 3, roles
    assert all(rows[f"kafka-{i}"][5].startswith("broker+controller") for i in (1, 2, 3))
    assert sum("active" in rows[f"kafka-{i}"][5] for i in (1, 2, 3)) == 1
    # The rest of the profile is listed too, every app included.
    for name in ("redis-exporter", "mlflow", "prometheus", "producer", "scorer", "alerting",
                 "retrainer"):  # fmt: skip
        assert name in rows, result.stdout


def test_every_app_gets_the_cluster_addresses_and_nothing_is_left_out() -> None:
    layout = layout_for("cluster")
    services = {s.name: s for s in Launcher(layout).services}
    for app in ("producer", "scorer", "alerting", "retrainer"):
        env = services[app].env
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == layout.kafka_bootstrap, app
        assert env["REDIS_URL"] == layout.redis_cluster_url, app
        assert not services[app].missing, app
    assert layout.kafka_bootstrap.count(",") == 2
    assert layout.redis_cluster_url.startswith("redis+cluster://")
    # The scorer commits a batch only once a replica of each master it wrote holds it.
    assert services["scorer"].env["SCORER_REDIS_REPLICA_ACKS"] == "1"


def test_a_second_up_changes_nothing(cluster: Cluster) -> None:
    before = _pids(cluster)
    again = Launcher(layout_for("cluster"))
    again.up(cluster.nodes)
    assert again.started == []
    assert _pids(cluster) == before
    for port in cluster.layout.redis_cluster_ports:
        assert _cluster_info(port)["cluster_state"] == "ok"
