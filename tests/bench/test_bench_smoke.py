"""The benchmark machinery end to end at a tiny size, against the test stack: the outputs
exist and are well formed. Never a performance assertion (see bench/README.md)."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import redis
from confluent_kafka.admin import AdminClient

from bench.config import Plan, Stack
from bench.runner import WARM_UP_RUN, execute
from tests.stack import TestStack

TINY = Plan(
    source="synthetic",
    days=1,
    drain_limit=5000,
    partitions=2,
    modes=("exactly_once",),
    no_scores_variant=False,
    plain_memory=False,
    loads=(200,),
    warmup_s=1.0,
    measure_s=3.0,
    load_users=2000,
    load_merchants=500,
    alo_latency_loads=(),
    naive_messages=50,
    naive_seconds=30.0,
    train_days=1,
    train_limit=1500,
    trees=10,
)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_tiny_benchmark_writes_complete_results(stack: TestStack, tmp_path: Path) -> None:
    target = Stack(stack.kafka_bootstrap, stack.redis_url, stack.mlflow_uri)
    results = execute(target, TINY, tmp_path, "python -m bench (smoke test)")

    files = results["files"]
    saved = orjson.loads(Path(files["json"]).read_bytes())
    for key in ("machine", "input", "model", "throughput", "memory", "latency", "naive"):
        assert key in saved, key
    assert saved["input"]["transactions"] == 5000

    assert saved["throughput"][WARM_UP_RUN]["transactions"] == 5000
    drain = saved["throughput"]["exactly_once"]
    assert drain["transactions"] == 5000
    for key in ("steady_tx_s", "overall_tx_s", "scorer_cpu_s", "peak_rss_bytes"):
        assert _positive(drain[key]), key
    assert set(drain["stages_us_per_tx"]) == {"decode", "features", "model", "produce", "commit"}

    memory = saved["memory"]["enriched"]
    assert memory["users"] > 0 and _positive(memory["bytes_per_active_user"])

    (level,) = saved["latency"]["exactly_once"]["levels"]
    assert level["offered_tx_s"] == 200
    assert level["scored"] == level["sent"] > 0
    assert _positive(level["achieved_tx_s"])
    assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"] <= level["max_ms"]
    # Each score is produced before it is read: the part until produced is the smaller.
    assert 0 < level["until_produce"]["p99_ms"] <= level["p99_ms"]

    naive = saved["naive"]
    assert naive["messages"] == 50 and _positive(naive["tx_s"])

    summary = Path(files["markdown"]).read_text()
    assert "| target | goal | measured | met |" in summary
    assert Path(files["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing of the run is left behind: Redis keys, topics.
    client = redis.Redis.from_url(stack.redis_url)
    topics = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10)
    for world in saved["worlds"]:
        assert not any(True for _ in client.scan_iter(match=f"fx-{world}-*"))
        assert not [t for t in topics.topics if t.startswith(world)]
