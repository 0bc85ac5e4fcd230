"""BatchHistogram is exposed exactly as prometheus_client's own Histogram would be."""

from __future__ import annotations

import uuid

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from scorer.metrics import LATENCY_BUCKETS, BatchHistogram


def _lines(registry: CollectorRegistry, name: str) -> set[str]:
    text = generate_latest(registry).decode()
    return {
        line
        for line in text.splitlines()
        if name in line and "_created" not in line  # creation time differs by design
    }


def test_batch_histogram_matches_prometheus_histogram() -> None:
    name = f"test_batch_histogram_{uuid.uuid4().hex[:8]}"
    values = np.array([0.0, 0.004, 0.005, 0.0051, 0.1, 0.75, 2.5, 61.0, 1e9])
    ours = BatchHistogram(name, "latency", LATENCY_BUCKETS, label="version")
    try:
        ours.observe_many(values[:4], "1")
        ours.observe_many(values[4:], "1")
        ours.observe_many(values[:2], "2")

        reference_registry = CollectorRegistry()
        reference = Histogram(
            name, "latency", ["version"], buckets=LATENCY_BUCKETS, registry=reference_registry
        )
        for v in values:
            reference.labels("1").observe(v)
        for v in values[:2]:
            reference.labels("2").observe(v)

        expected = _lines(reference_registry, name)
        assert len(expected) > 2 * len(LATENCY_BUCKETS)
        assert _lines(REGISTRY, name) == expected
    finally:
        REGISTRY.unregister(ours)
