"""The producer against a real Kafka: what goes in comes back, keyed and on contract;
labels only once event time has reached them; /metrics counts it; SIGTERM stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from confluent_kafka import TIMESTAMP_CREATE_TIME
from prometheus_client.parser import text_string_to_metric_families

from fraudcore.contracts import decode_label, decode_transaction
from fraudcore.settings import REPO_ROOT
from producer import metrics
from producer.app import RunOptions, execute
from producer.population import PopulationConfig
from producer.runner import RunLimits
from producer.simulator import TrafficConfig
from tests.kafka_util import read_topic
from tests.producer.helpers import DAY, settings_for

DELAY = 3600.0


def _options(count: int, seed: int) -> RunOptions:
    return RunOptions(
        limits=RunLimits(count=count),
        speed=0.0,
        population=PopulationConfig(seed=seed, users=80, merchants=40),
        traffic=TrafficConfig(start=time.time() - 10 * DAY, fraud_rate=0.05, label_delay_s=DELAY),
    )


def test_simulated_transactions_round_trip_with_their_labels(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    settings = settings_for(kafka_config, new_topic)
    n = 600
    summary = execute(settings, _options(n, seed=21))
    assert summary.ok and summary.transactions == n and summary.labels == n
    assert summary.delivered == {"transactions": n, "labels": n}

    txs = read_topic(kafka_config, settings.topic_transactions)
    labels = read_topic(kafka_config, settings.topic_labels)
    assert len(txs) == n and len(labels) == n
    by_id = {}
    for msg in txs:
        tx, event_ts = decode_transaction(msg.value())
        assert msg.key() == tx["user_id"].encode()
        by_id[tx["transaction_id"]] = (tx, event_ts, msg.timestamp()[1])
    assert len(by_id) == n
    # Kafka create times of the transactions, in event-time order, to date each label.
    produced = sorted((ts, created) for _, ts, created in by_id.values())
    last_event = produced[-1][0]
    for msg in labels:
        label, available_at = decode_label(msg.value())
        assert msg.key() == label["transaction_id"].encode()
        tx, event_ts, _ = by_id[label["transaction_id"]]
        assert label["user_id"] == tx["user_id"] and label["merchant_id"] == tx["merchant_id"]
        assert available_at >= event_ts + DELAY - 1e-3
        kind, created = msg.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        if available_at <= last_event:
            # Published in the run: not before a transaction at or after available_at was.
            first_after = next(c for ts, c in produced if ts >= available_at)
            assert created >= first_after
        else:  # flushed at the end of the finite run
            assert created >= produced[-1][1]


def test_metrics_endpoint_serves_the_counters(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    server, port = metrics.serve(0)
    try:

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name.startswith("producer_")
            }

        before = scrape()
        settings = settings_for(kafka_config, new_topic)
        summary = execute(settings, _options(300, seed=22))
        after = scrape()
    finally:
        server.shutdown()  # type: ignore[attr-defined]

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    produced = sum(
        after[k] - before.get(k, 0.0) for k in after if k[0] == "producer_transactions_total"
    )
    assert produced == 300 == summary.transactions
    assert delta("producer_transactions_total", scenario="legit") > 0
    assert (
        delta("producer_labels_total", label="legit")
        + delta("producer_labels_total", label="fraud")
        == 300
    )
    assert delta("producer_delivered_total", stream="transactions") == 300
    assert delta("producer_delivered_total", stream="labels") == 300
    for name in ("producer_event_time_lag_seconds", "producer_pending_labels"):
        assert (name, ()) in after
    assert after[("producer_event_time_lag_seconds", ())] > 0  # a backfill is behind the wall
    # Failure counters exist from the start (a dashboard shows 0, not "no data").
    for stream in ("transactions", "labels", "dlq"):
        assert delta("producer_delivery_failures_total", stream=stream) == 0
        assert ("producer_delivery_failures_total", (("stream", stream),)) in after


def test_sigterm_stops_cleanly_and_flushes_everything(
    kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    settings = settings_for(kafka_config, new_topic)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
        "TOPIC_TRANSACTIONS": settings.topic_transactions,
        "TOPIC_LABELS": settings.topic_labels,
        "TOPIC_TRANSACTIONS_DLQ": settings.topic_transactions_dlq,
        "TRANSACTIONS_PARTITIONS": "3",
    }
    # A one-day backfill at full speed, then real time: it would run for ever.
    argv = [
        sys.executable,
        "-m",
        "producer",
        "--users=100",
        "--merchants=40",
        "--speed=0",
        "--start=now-1d",
        "--label-delay=1h",
        "--metrics-port=0",
        "--seed=23",
    ]
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (
                len(read_topic(kafka_config, settings.topic_transactions, expect=50, timeout_s=2))
                >= 50
            ):
                break
        assert proc.poll() is None, "the producer ended before it was asked to"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    finished = re.search(
        r"run finished .*stopped_by=signal transactions=(\d+) labels=(\d+)", stderr
    )
    assert finished, stderr[-3000:]
    produced, labelled = int(finished.group(1)), int(finished.group(2))
    assert produced == labelled > 0
    assert "undelivered=0" in stderr and "delivery_failures=0" in stderr
    assert len(read_topic(kafka_config, settings.topic_transactions)) == produced
    assert len(read_topic(kafka_config, settings.topic_labels)) == labelled
