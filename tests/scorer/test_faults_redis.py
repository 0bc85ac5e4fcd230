"""Redis killed under a running scorer: it waits, carries on, and changes no output.

Redis runs as the launcher runs it (append-only file, `appendfsync everysec`), but a
private one (tests/private_stack.py): the shared test Redis serves every other test.
`kill -9` of redis-server keeps every write it acknowledged, because Redis writes the
append-only file before it replies (only the fsync is once a second, and only a crash of
the host loses what was not fsynced); so after the restart the state is complete, and
the committed output must equal an uninterrupted run's, features included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.deployment import Deployment
from tests.kafka_util import produce_records, read_topic
from tests.private_stack import private_stack
from tests.scorer.harness import wait_until
from tests.scorer.reference import OneDay, assert_same_output, committed_scores
from tests.stack import TestStack

DOWN_S = 3.0  # how long Redis stays dead


def test_redis_killed_mid_stream_changes_no_output(
    make_world: Callable[..., Deployment],
    kafka: dict[str, str],
    stack: TestStack,
    one_day: OneDay,
    tmp_path: Path,
) -> None:
    """kill -9 Redis while the scorer works through a stream, start it again a few
    seconds later: the scorer stays up and, once Redis is back, commits every transaction
    exactly once with the scores, features and alerts of an uninterrupted run; no merchant
    counts a transaction twice."""
    records = one_day.records
    chunks = [records[i : i + 300] for i in range(0, len(records), 300)]
    with private_stack(tmp_path / "services", ["redis"]) as private:
        own = TestStack(
            kafka_bootstrap=stack.kafka_bootstrap,
            redis_url=private.layout.redis_url,
            mlflow_uri=stack.mlflow_uri,
        )
        # Small batches, each overlapping with the next: the second chunk takes dozens of
        # batches, so the kill lands with feature reads and user-state writes in flight.
        world = make_world(
            partitions=6, on=own, SCORER_BATCH_MAX_SIZE="10", SCORER_OVERLAP_MIN_BATCH="1"
        )
        scorer = world.start_scorer("redis-victim")
        try:
            scorer.wait_ready()
            produce_records(kafka, world.transactions, chunks[0])
            wait_until(lambda: committed_scores(scorer) >= len(chunks[0]), 60, "the first chunk")
            produce_records(kafka, world.transactions, chunks[1])
            # Strike once the second chunk has begun to be committed.
            deadline = time.monotonic() + 60
            while committed_scores(scorer) <= len(chunks[0]) and time.monotonic() < deadline:
                time.sleep(0.002)
            private.kill("redis")
            at_kill = committed_scores(scorer)
            log_at_kill = len(scorer.log.read_text())
            assert len(chunks[0]) < at_kill < len(chunks[0]) + len(chunks[1]), (
                f"the kill did not land mid-chunk: {at_kill} scored"
            )
            produce_records(kafka, world.transactions, chunks[2])  # arrives while Redis is dead
            time.sleep(DOWN_S)
            assert scorer.proc.poll() is None, f"the scorer exited:\n{scorer.tail()}"
            committed_while_down = len(read_topic(kafka, world.scores, timeout_s=10))
            private.start("redis")
            for chunk in chunks[3:]:
                produce_records(kafka, world.transactions, chunk)

            def finished_or_exited() -> bool:
                if scorer.proc.poll() is not None:
                    return True
                try:
                    return committed_scores(scorer) >= len(records)
                except httpx.HTTPError:
                    return False

            wait_until(finished_or_exited, 120, "the scorer to finish the stream")
            assert scorer.proc.poll() is None, (
                f"the scorer exited ({scorer.proc.returncode}) once Redis was back:\n"
                + scorer.tail()
            )
            assert_same_output(world, kafka, own, one_day)
            assert committed_while_down < len(records)
            scorer.wait_ready(30)
            # It noticed the outage and said when Redis came back.
            after_kill = scorer.log.read_text()[log_at_kill:]
            assert "dependency failing" in after_kill and "dependency=redis" in after_kill
            assert "dependency back" in after_kill, scorer.tail()
        finally:
            code = scorer.stop()
        assert code == 0, scorer.tail()
