"""KRaft Kafka nodes (one alone, or three in a cluster) from Apache's jars on Maven
Central, each with the Prometheus JMX exporter as a Java agent serving its metrics."""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from fraudcore.logs import kv
from fraudcore.settings import REPO_ROOT
from launcher.layout import CACHE_DIR

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
# The newest version that resolves from Maven Central here (1.1.0 to 1.5.0 do not).
JMX_EXPORTER_VERSION = "1.0.1"
HERE = Path(__file__).resolve().parent
POM = HERE / "kafka-pom.xml"
LOG4J_CONFIG = HERE / "kafka-log4j2.properties"
# Which MBeans the agent reads and their Prometheus names; docker-compose.yml mounts it too.
JMX_EXPORTER_CONFIG = REPO_ROOT / "prometheus" / "kafka-jmx-exporter.yml"
FETCH_TIMEOUT_S = 900
FORMAT_TIMEOUT_S = 120
HEAP = "-Xmx512m"


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    return CACHE_DIR / f"kafka-{version}" / "libs"


def jmx_agent_jar(version: str = JMX_EXPORTER_VERSION) -> Path:
    return CACHE_DIR / f"jmx-exporter-{version}" / f"jmx_prometheus_javaagent-{version}.jar"


def _maven(goal_args: list[str], what: str) -> None:
    if shutil.which("mvn") is None:
        raise RuntimeError("mvn not found: install Maven (make install does)")
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), f"-Dmaven.repo.local={CACHE_DIR / 'm2'}", *goal_args],
        capture_output=True, text=True, timeout=FETCH_TIMEOUT_S,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"maven could not fetch {what}:\n{result.stdout[-3000:]}")


def _fetch_once(folder: Path, what: str, goal_args: list[str]) -> Path:
    """Maven copies into a staging folder that replaces `folder` only when complete;
    later calls only check the marker."""
    done = folder / ".complete"
    if done.exists():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("fetching %s from Maven Central %s", what, kv(into=folder))
    started = time.monotonic()
    _maven([*goal_args, f"-DoutputDirectory={staging}"], what)
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    done.touch()
    logger.info(
        "%s ready %s",
        what,
        kv(jars=len(list(folder.glob("*.jar"))), took_s=f"{time.monotonic() - started:.0f}"),
    )
    return folder


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker's jars into .cache once."""
    return _fetch_once(
        libs_dir(version),
        f"kafka {version} jars",
        [f"-Dkafka.version={version}", "-DincludeScope=runtime", "dependency:copy-dependencies"],
    )


def fetch_jmx_agent(version: str = JMX_EXPORTER_VERSION) -> Path:
    """The JMX exporter's agent jar into .cache once. Apart from the broker's libs: an
    agent is loaded by -javaagent, not from the classpath."""
    jar = jmx_agent_jar(version)
    artifact = f"io.prometheus.jmx:jmx_prometheus_javaagent:{version}"
    _fetch_once(
        jar.parent, f"jmx exporter {version}", ["dependency:copy", f"-Dartifact={artifact}"]
    )
    return jar


def quorum_voters(controllers: dict[int, int], host: str = "localhost") -> str:
    """controller.quorum.voters for {node id: controller port}: a static quorum, every
    voter known from the first start (no controller registration step to run)."""
    return ",".join(f"{node}@{host}:{port}" for node, port in sorted(controllers.items()))


def tools_dir(version: str = KAFKA_VERSION) -> Path:
    return CACHE_DIR / f"kafka-tools-{version}"


def fetch_tools(version: str = KAFKA_VERSION) -> Path:
    """Kafka's command-line tools jar (kafka-metadata-quorum's class) into .cache once.
    Apart from the broker's libs, which it runs with: the broker does not need it, and
    its own dependencies (argparse4j, jackson) are already there."""
    return _fetch_once(
        tools_dir(version),
        f"kafka tools {version}",
        ["dependency:copy", f"-Dartifact=org.apache.kafka:kafka-tools:{version}"],
    )


def describe_quorum(bootstrap: str) -> dict[str, str]:
    """`kafka-metadata-quorum describe --status` through `bootstrap`: LeaderId,
    CurrentVoters (JSON), CurrentObservers, ... as the tool prints them."""
    classpath = f"{_classpath(fetch_tools())}:{_classpath(libs_dir())}"
    result = subprocess.run(
        ["java", "-Xmx128m", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath,
         "org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server", bootstrap,
         "describe", "--status"],
        capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"kafka-metadata-quorum failed:\n{result.stdout}{result.stderr}")
    # Its answer is "Key:   value" lines among the client's log lines ("[date] INFO ...").
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^([A-Za-z]+):\s+(.*)$", result.stdout, re.MULTILINE)
    }


def broker_properties(
    port: int,
    controller_port: int,
    host: str = "localhost",
    *,
    node_id: int = 1,
    voters: str | None = None,
    replicas: int = 1,
) -> dict[str, str]:
    """A KRaft node acting as broker and controller: alone (the defaults), or node
    `node_id` of the quorum `voters` with `replicas` brokers to replicate over.

    Replication is sized to the cluster so transactions and consumer groups work: one
    node holds the only replica of every internal topic (with Kafka's default of 3 the
    transaction coordinator never starts); a cluster of three keeps three copies and
    acknowledges a write on two (min.insync.replicas=2), so one broker may go down
    without losing an acknowledged record or stopping writes.

    Otherwise Kafka's defaults, on purpose (measured on 2 cores with the benchmark's
    traffic): the broker's CPU goes per request, not per byte; 2 network + 2 io threads
    and C1-only JIT did not lower it (C1-only: ~25 % more CPU per request), and G1's
    threads use ~1-2 % of a core, too little for another collector to matter.
    transaction.partition.verification.enable stays on although its internal
    AddPartitionsToTxn checks are ~13-15 % of the requests: it prevents hanging
    transactions, which would stall every read_committed consumer."""
    min_isr = str(min(2, replicas))
    properties = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or quorum_voters({node_id: controller_port}, host),
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
    }
    if replicas > 1:
        # Topics created without an explicit factor (a client's, an internal one) get
        # the cluster's, not Kafka's default of one copy.
        properties["default.replication.factor"] = str(replicas)
        properties["min.insync.replicas"] = min_isr
        properties["share.coordinator.state.topic.replication.factor"] = str(replicas)
        properties["share.coordinator.state.topic.min.isr"] = min_isr
    return properties


def write_server_properties(path: Path, properties: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in unpadded base64url. Like Kafka's own
    Uuid.randomUuid, never one starting with "-", which a command line reads as a flag."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _classpath(libs: Path) -> str:
    return f"{libs}/*"


def shared_cluster_id(path: Path) -> str:
    """The id every node of one cluster is formatted with, kept in `path` (created on
    the first call): a node formatted with another id would refuse to join."""
    if path.exists():
        return path.read_text().strip()
    cluster_id = new_cluster_id()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id + "\n")
    return cluster_id


def format_storage(libs: Path, config: Path, data_dir: Path, cluster_id: str | None = None) -> None:
    """Format the KRaft log directory, once per data directory; a single node gets a
    fresh cluster id, a cluster's nodes the one they share."""
    if (data_dir / "meta.properties").exists():
        return
    cluster_id = cluster_id or new_cluster_id()
    result = subprocess.run(
        ["java", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", _classpath(libs),
         "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)],
        capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")
    logger.info("kafka storage formatted %s", kv(dir=data_dir, cluster_id=cluster_id))


def jmx_agent_option(jar: Path, port: int, host: str = "127.0.0.1") -> str:
    """-javaagent for the exporter: its HTTP server on host:port serves /metrics."""
    return f"-javaagent:{jar}={host}:{port}:{JMX_EXPORTER_CONFIG}"


def broker_argv(libs: Path, config: Path, agent: str) -> list[str]:
    return [
        "java", HEAP, "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", agent,
        "-cp", _classpath(libs), "kafka.Kafka", str(config),
    ]  # fmt: skip
