"""A single-node KRaft Kafka broker from Apache's jars on Maven Central, with the
Prometheus JMX exporter as a Java agent serving its metrics."""

from __future__ import annotations

import base64
import logging
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


def broker_properties(port: int, controller_port: int, host: str = "localhost") -> dict[str, str]:
    """Single node acting as broker and controller; replication settings sized for one
    node so transactions and consumer groups work.

    Otherwise Kafka's defaults, on purpose (measured on 2 cores with the benchmark's
    traffic): the broker's CPU goes per request, not per byte; 2 network + 2 io threads
    and C1-only JIT did not lower it (C1-only: ~25 % more CPU per request), and G1's
    threads use ~1-2 % of a core, too little for another collector to matter.
    transaction.partition.verification.enable stays on although its internal
    AddPartitionsToTxn checks are ~13-15 % of the requests: it prevents hanging
    transactions, which would stall every read_committed consumer."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
    }


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


def format_storage(libs: Path, config: Path, data_dir: Path) -> None:
    """Format the KRaft log directory, once per data directory."""
    if (data_dir / "meta.properties").exists():
        return
    cluster_id = new_cluster_id()
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
