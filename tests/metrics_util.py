"""Reading a service's Prometheus page in tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the page at `url`, by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(url: str, name: str, **labels: str) -> float:
    """One sample of the page at `url` (0 when the service has not exported it yet)."""
    return scrape(url).get((name, tuple(sorted(labels.items()))), 0.0)
