"""An uninterrupted run's output over a one-day stream, and the check that a disturbed
run (its scorer killed, rebalanced or frozen, its Redis killed) committed the same.

Within one UTC day merchant features (previous full days) cannot differ with the
interleaving of partitions, so whole messages can be compared between runs."""

from __future__ import annotations

from typing import Any, NamedTuple

import redis

from bench.deployment import Deployment, ServiceProcess
from scorer.feature_store import FeatureStore
from scorer.slot_routing import SlotRouter, cluster_seeds
from tests.kafka_util import produce_records, read_topic, values
from tests.metrics_util import sample
from tests.scorer.harness import scorer_deployment
from tests.scorer.streams import stream_records
from tests.stack import TestStack

# 01:00 UTC on some day: a stream starting here with a short mean gap stays in one day.
ONE_DAY_START = 1_780_000_000.0 // 86_400 * 86_400 + 3_600
# Differences listed in a failed comparison (the rest are counted).
SHOWN_DIFFERENCES = 20


class OneDay(NamedTuple):
    """The stream, and the reference run's scores and alerts by transaction_id."""

    records: list[dict[str, Any]]
    scores: dict[str, dict[str, Any]]
    alerts: dict[str, dict[str, Any]]


def comparable(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        m["transaction_id"]: {k: v for k, v in m.items() if k != "processed_at"} for m in messages
    }


def reference_run(stack: TestStack, model_name: str) -> OneDay:
    """Score a one-day stream with one scorer that nothing disturbs."""
    stream = stream_records(seed=23, n=1500, users=40, start=ONE_DAY_START, mean_gap_s=20)
    world = scorer_deployment(stack, model_name, partitions=6)
    kafka = world.kafka
    produce_records(kafka, world.transactions, stream)
    scorer = world.start_scorer("reference")
    try:
        scorer.wait_ready()
        scores = values(read_topic(kafka, world.scores, expect=len(stream), timeout_s=180))
        alerts = values(read_topic(kafka, world.alerts))
    finally:
        world.cleanup()
    assert len(scores) == len(stream)
    return OneDay(stream, comparable(scores), comparable(alerts))


def differences(
    actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]
) -> list[str]:
    """What differs between two runs' messages, field by field (features one by one)."""
    found = [f"{t}: missing" for t in expected.keys() - actual.keys()]
    found += [f"{t}: unexpected" for t in actual.keys() - expected.keys()]
    for t in sorted(expected.keys() & actual.keys()):
        want, got = expected[t], actual[t]
        for key in sorted(want.keys() | got.keys()):
            if key == "features" and isinstance(want.get(key), dict):
                for name in sorted(want[key].keys() | (got.get(key) or {}).keys()):
                    w, g = want[key].get(name), (got.get(key) or {}).get(name)
                    if w != g:
                        found.append(f"{t}: features.{name} {g!r}, uninterrupted {w!r}")
            elif want.get(key) != got.get(key):
                found.append(f"{t}: {key} {got.get(key)!r}, uninterrupted {want.get(key)!r}")
    return found


def _same(
    actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], what: str
) -> None:
    found = differences(actual, expected)
    assert not found, f"{len(found)} differences in {what}:\n" + "\n".join(
        found[:SHOWN_DIFFERENCES]
    )


def assert_same_output(
    world: Deployment, kafka: dict[str, str], stack: TestStack, one_day: OneDay
) -> None:
    """The committed scores and alerts equal the uninterrupted run's, message for message,
    and every merchant counted each of its transactions once (in `stack`'s Redis)."""
    stream, expected_scores, expected_alerts = one_day
    scores = values(read_topic(kafka, world.scores, expect=len(stream), timeout_s=180))
    alerts = values(read_topic(kafka, world.alerts))
    assert len(scores) == len(stream), "a committed score is duplicated or missing"
    _same(comparable(scores), expected_scores, "scores")
    assert len(alerts) == len(expected_alerts), "a committed alert is duplicated or missing"
    _same(comparable(alerts), expected_alerts, "alerts")
    # Merchant state counted every transaction exactly once.
    seeds = cluster_seeds(stack.redis_url)
    client = SlotRouter(seeds) if seeds else redis.Redis.from_url(stack.redis_url)
    store = FeatureStore(client, world.key_prefix)
    per_merchant: dict[str, int] = {}
    for record in stream:
        per_merchant[record["merchant_id"]] = per_merchant.get(record["merchant_id"], 0) + 1
    for merchant, count in per_merchant.items():
        assert sum(store.merchant_state(merchant).days.values()) == count, merchant


def committed_scores(scorer: ServiceProcess) -> float:
    """Transactions the scorer has committed scores for (its own metric): fault tests
    wait on it to strike mid-stream."""
    return sample(scorer.url + "/metrics", "scorer_transactions_scored_total")
