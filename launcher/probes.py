"""Health probes (each answers quickly with True or False and never raises) and the
bounded wait built on them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from fraudcore.logs import kv

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
LOG_EVERY_S = 5.0


class StartError(RuntimeError):
    """A service could not be started or did not become healthy."""


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def redis_ok(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_S)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def kafka_ok(bootstrap: str, node_id: int | None = None) -> bool:
    """Kafka answers metadata and lists a broker: any, or node `node_id` (a cluster's
    node asked about itself, so that every node has registered once each passes)."""
    # log_level 0: a broker that is still starting is expected, not worth librdkafka's
    # connection-refused lines on stderr.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=PROBE_TIMEOUT_S)
    except KafkaException:
        return False
    # A KRaft broker answers metadata before it has registered itself; only a listed
    # broker can take produce requests.
    if node_id is not None:
        return node_id in metadata.brokers
    return bool(metadata.brokers)


def metric_value(url: str, name: str) -> float | None:
    """The value of an unlabelled series on a /metrics page; None when absent or the
    page does not answer."""
    try:
        text = httpx.get(url, timeout=PROBE_TIMEOUT_S).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        series, _, value = line.partition(" ")
        if series == name:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def wait_until(
    probe: Callable[[], bool],
    *,
    what: str,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
    log_file: Path | None = None,
) -> float:
    """Poll `probe` until it passes; returns the seconds it took. Logs progress every
    few seconds. Raises StartError on timeout, or at once if `alive` says the process
    has exited (with the end of its log)."""
    started = time.monotonic()
    next_note = started + LOG_EVERY_S
    delay = 0.1
    while True:
        if probe():
            took = time.monotonic() - started
            logger.info("healthy %s", kv(service=what, after_s=f"{took:.1f}"))
            return took
        now = time.monotonic()
        where = f"; log: {log_file}" if log_file else ""
        if alive is not None and not alive():
            end = f"\n{tail(log_file)}" if log_file else ""
            raise StartError(f"{what} exited during start-up{where}{end}")
        if now - started >= timeout_s:
            raise StartError(f"{what} not healthy after {timeout_s:.0f}s{where}")
        if now >= next_note:
            logger.info("waiting %s", kv(service=what, elapsed_s=f"{now - started:.0f}"))
            next_note = now + LOG_EVERY_S
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
