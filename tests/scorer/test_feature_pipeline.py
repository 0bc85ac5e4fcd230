"""Feature requests sent ahead (scorer/feature_pipeline.py), on a real Redis: the same
vectors as one round trip at a time, also when the connection breaks or Redis forgets
the scripts with requests in flight, and when the answer to a batch's user-state writes
is lost."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from fraudcore.features import FEATURE_NAMES, TxnInput
from fraudcore.offline import OfflineFeatureBuilder
from scorer.feature_pipeline import FeaturePipeline
from scorer.feature_store import FeatureStore, SourcePosition
from tests.scorer.streams import random_stream

BATCH = 60


def _batches(stream: list, source: str = "t:0") -> list[tuple[list, list]]:
    out = []
    for start in range(0, len(stream), BATCH):
        chunk = stream[start : start + BATCH]
        txs = [TxnInput.from_record(r, ts) for r, ts in chunk]
        out.append((txs, [SourcePosition(source, start + i) for i in range(len(chunk))]))
    return out


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    bad = [FEATURE_NAMES[j] for j in np.where(~same.all(axis=0))[0]]
    assert not bad, f"features differ from the offline builder: {bad}"


def _own_connection_id(pipeline: FeaturePipeline) -> int:
    """The Redis client id of the pipeline's connection; only when nothing is in flight."""
    pipeline._connection.send_command("CLIENT", "ID")  # test of internals
    return int(pipeline._connection.read_response())


def test_two_batches_in_flight_give_the_offline_vectors(store: FeatureStore) -> None:
    stream = random_stream(seed=21, n=600, users=12)  # users recur across batches
    expected = OfflineFeatureBuilder().transactions(stream)
    pipeline = FeaturePipeline(store)
    batches = _batches(stream)
    rows = []
    pending = pipeline.submit(*batches[0])
    for txs, positions in batches[1:]:
        # Sent before the previous batch's users are written: the users it shares with
        # that batch are read before their newest state is in Redis.
        following = pipeline.submit(txs, positions)
        rows.append(pipeline.result(pending))
        pipeline.confirm(pending)  # as the scorer does, before it commits
        pending = following
    rows.append(pipeline.result(pending))
    pipeline.confirm(pending)
    pipeline.close()
    _assert_same(np.vstack(rows), expected)


def test_results_must_be_collected_in_order(store: FeatureStore) -> None:
    batches = _batches(random_stream(seed=22, n=2 * BATCH))
    pipeline = FeaturePipeline(store)
    first = pipeline.submit(*batches[0])
    second = pipeline.submit(*batches[1])
    with pytest.raises(RuntimeError, match="submission order"):
        pipeline.result(second)
    pipeline.result(first)
    pipeline.result(second)
    pipeline.close()


def test_a_killed_connection_resends_what_was_in_flight(store: FeatureStore) -> None:
    stream = random_stream(seed=23, n=6 * BATCH, users=10)
    expected = OfflineFeatureBuilder().transactions(stream)
    batches = _batches(stream)
    pipeline = FeaturePipeline(store)
    rows = [pipeline.result(pipeline.submit(*batches[0]))]
    victim = _own_connection_id(pipeline)
    # Writes paused: the next requests reach Redis but stay unanswered until the kill.
    store.single_node.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    try:
        in_flight = [pipeline.submit(*b) for b in batches[1:4]]
        store.single_node.client_kill_filter(_id=victim)
    finally:
        store.single_node.execute_command("CLIENT", "UNPAUSE")
    errors = 0
    for pending in in_flight:
        while True:
            try:
                rows.append(pipeline.result(pending))
                break
            except (redis.ConnectionError, redis.TimeoutError):
                errors += 1  # the scorer's loop retries the same way
                assert errors < 5
    assert errors >= 1, "the kill went unnoticed: nothing was in flight"
    for b in batches[4:]:
        rows.append(pipeline.result(pipeline.submit(*b)))
    assert _own_connection_id(pipeline) != victim
    pipeline.close()
    _assert_same(np.vstack(rows), expected)


def test_scripts_flushed_with_requests_in_flight(store: FeatureStore) -> None:
    stream = random_stream(seed=24, n=4 * BATCH, users=10)
    expected = OfflineFeatureBuilder().transactions(stream)
    batches = _batches(stream)
    pipeline = FeaturePipeline(store)
    rows = [pipeline.result(pipeline.submit(*batches[0]))]
    store.single_node.script_flush()  # as after a Redis restart without persistence of scripts
    in_flight = [pipeline.submit(*b) for b in batches[1:]]
    rows += [pipeline.result(p) for p in in_flight]
    pipeline.close()
    _assert_same(np.vstack(rows), expected)


def test_a_lost_write_answer_means_compute_the_batch_again(store: FeatureStore) -> None:
    stream = random_stream(seed=25, n=4 * BATCH, users=10)
    expected = OfflineFeatureBuilder().transactions(stream)
    batches = _batches(stream)
    pipeline = FeaturePipeline(store)
    first = pipeline.submit(*batches[0])
    rows = [pipeline.result(first)]
    pipeline.confirm(first)
    pipeline._writer.send_command("CLIENT", "ID")  # test of internals: nothing in flight
    writer = int(pipeline._writer.read_response())
    second = pipeline.submit(*batches[1])
    store.single_node.client_kill_filter(_id=writer)
    pipeline.result(second)  # its user states go down the killed connection
    with pytest.raises(redis.ConnectionError):
        pipeline.confirm(second)
    # The scorer does not commit the batch; it consumes it again and computes it again
    # (had some of its writes landed, they would be replays now, with the same vectors).
    pipeline.discard()
    for txs, positions in batches[1:]:
        pending = pipeline.submit(txs, positions)
        rows.append(pipeline.result(pending))
        pipeline.confirm(pending)
    pipeline.close()
    _assert_same(np.vstack(rows), expected)
