"""The broker restarted under a running scorer: it recovers by itself, exactly once.

After a broker restart librdkafka's `send_offsets_to_transaction` can wait for good,
past its timeout (librdkafka #5456, #5511; here 3 runs of 3 before the watchdog). The
scorer's watchdog then turns /ready false and exits, its supervisor starts it again,
and it resumes from the last committed offsets. This test restarts a broker of its own
(the shared test broker serves every other test) mid-stream, the way an operator would
(`python -m launcher down --services kafka`, then `up`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from fraudcore.features import FEATURE_NAMES
from fraudcore.offline import OfflineFeatureBuilder
from tests.kafka_util import read_topic, values
from tests.private_stack import PrivateStack, private_stack
from tests.scorer.harness import scorer_deployment, wait_until
from tests.scorer.models import isolation_model, register
from tests.scorer.streams import random_stream
from tests.stack import TestStack

# 01:00 UTC on some day, 20 s apart on average: the whole stream stays within that day,
# so the merchant features (previous full days) cannot depend on how partitions interleave
# and every feature vector must equal the offline builder's.
ONE_DAY_START = 1_780_000_000.0 // 86_400 * 86_400 + 3_600
TRANSACTIONS = 3000
FEED_RATE = 150  # transactions a second
# Not ready after 5 s without progress; the watchdog's exit after 20 + 15 s.
STALL_ENV = {"SCORER_STALL_TIMEOUT_S": "5", "SCORER_MAX_OUTAGE_S": "20"}
# Which deadline ends a stuck commit: the commit's own (transaction timeout 10 s + 5 s,
# before the watchdog's, as with the default settings), or the watchdog's (the
# transaction timeout left at 60 s) for any other call that does not return.
DEADLINES = {
    "commit-deadline": {"SCORER_TRANSACTION_TIMEOUT_MS": "10000"},
    "watchdog": {},
}
# Broker back up, the scorer stalled for up to 35 s, restarted, recompiled, resumed.
RECOVERY_BOUND_S = 180.0


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateStack]:
    with private_stack(tmp_path / "services", ["kafka"]) as services:
        yield services


def _feed(bootstrap: str, topic: str, records: list[dict[str, Any]], done: threading.Event) -> None:
    """Produce at FEED_RATE, riding out the broker's absence (idempotent, long timeout)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 300_000,
        }
    )
    failed: list[str] = []
    for i, record in enumerate(records):
        producer.produce(
            topic,
            orjson.dumps(record),
            record["user_id"].encode(),
            on_delivery=lambda err, _msg: failed.append(str(err)) if err else None,
        )
        producer.poll(0)
        if i % 15 == 14:
            time.sleep(15 / FEED_RATE)
    assert producer.flush(300) == 0, "the feed could not deliver every transaction"
    assert not failed, failed[:3]
    done.set()


@pytest.mark.parametrize("deadline", sorted(DEADLINES))
def test_broker_restart_mid_stream_recovers_by_itself_exactly_once(
    private_kafka: PrivateStack, stack: TestStack, deadline: str
) -> None:
    kafka: dict[str, Any] = {"bootstrap.servers": private_kafka.layout.kafka_bootstrap}
    model = f"broker-restart-{uuid.uuid4().hex[:8]}"
    register(stack.mlflow_uri, model, isolation_model(seed=4))
    world = scorer_deployment(
        TestStack(private_kafka.layout.kafka_bootstrap, stack.redis_url, stack.mlflow_uri),
        model, partitions=6, **STALL_ENV, **DEADLINES[deadline],
    )  # fmt: skip
    stream = random_stream(seed=41, n=TRANSACTIONS, users=60, start=ONE_DAY_START, mean_gap_s=20)
    records = [record for record, _ in stream]

    scorer = world.start_scorer(supervised=True)
    try:
        scorer.wait_ready()
        fed = threading.Event()
        feeder = threading.Thread(
            target=_feed,
            args=(kafka["bootstrap.servers"], world.transactions, records, fed),
            daemon=True,
        )
        feeder.start()
        # Mid-stream: a few seconds of scoring before, most of the stream after.
        wait_until(lambda: _scored(scorer.url) >= 300, 60, "the first scores")
        private_kafka.stop("kafka")
        time.sleep(5)
        private_kafka.start("kafka")
        back = time.monotonic()
        feeder.join(RECOVERY_BOUND_S)
        assert fed.is_set(), "the feed did not finish"

        scores = values(
            read_topic(kafka, world.scores, expect=TRANSACTIONS, timeout_s=RECOVERY_BOUND_S)
        )
        recovered_s = time.monotonic() - back
        ids = [s["transaction_id"] for s in scores]
        assert len(ids) == len(set(ids)), "a committed score is duplicated"
        assert sorted(ids) == sorted(r["transaction_id"] for r in records), (
            f"scores missing {recovered_s:.0f}s after the broker came back:\n{scorer.tail()}"
        )
        wait_until(lambda: _ready(scorer.url), 60, "the scorer to report ready again")
        # Nothing folded twice into the user state: the features are the offline builder's.
        offline = OfflineFeatureBuilder().transactions(stream)
        by_id = {s["transaction_id"]: s["features"] for s in scores}
        online = np.array(
            [[_number(by_id[r["transaction_id"]][n]) for n in FEATURE_NAMES] for r in records]
        )
        np.testing.assert_array_equal(online, offline)
        print(
            f"recovered {recovered_s:.0f}s after the broker came back; {_starts(scorer.log)} starts"
        )
    finally:
        world.cleanup()


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _scored(url: str) -> float:
    try:
        text = httpx.get(url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("scorer_transactions_scored_total "):
            return float(line.split()[1])
    return 0.0


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _starts(log: Path) -> int:
    return sum("logger=launcher.supervise started" in line for line in log.read_text().splitlines())
