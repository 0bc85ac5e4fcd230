"""The scorer process end to end: real Kafka, Redis and MLflow, `python -m scorer`."""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Callable

import httpx
import orjson
import redis

from bench.deployment import Deployment
from fraudcore.contracts import validate
from scorer.feature_store import FeatureStore
from tests.kafka_util import headers as kafka_headers
from tests.kafka_util import produce, produce_records, read_topic, values
from tests.scorer.harness import wait_until
from tests.scorer.models import isolation_model, register
from tests.scorer.reference import OneDay, assert_same_output, committed_scores
from tests.scorer.streams import stream_records
from tests.stack import TestStack

POISON: list[tuple[str, bytes | None]] = [
    ("unparseable", b"this is not json"),
    ("unparseable", b'{"schema_version":1,"transaction_id":"nan","user_id":"u","merchant_id":"m",'
     b'"amount":NaN,"timestamp":"2026-11-21T08:00:00Z"}'),
    ("schema_violation", orjson.dumps({"schema_version": 1, "transaction_id": "neg", "user_id": "u",
                                       "merchant_id": "m", "amount": -5, "timestamp": "2026-11-21T08:00:00Z"})),
    ("missing_field", orjson.dumps({"schema_version": 1, "transaction_id": "nouser", "merchant_id": "m",
                                    "amount": 5, "timestamp": "2026-11-21T08:00:00Z"})),
    ("bad_timestamp", orjson.dumps({"schema_version": 1, "transaction_id": "old", "user_id": "u",
                                    "merchant_id": "m", "amount": 5, "timestamp": "1970-01-02T00:00:00Z"})),
    ("oversized", orjson.dumps({"schema_version": 1, "transaction_id": "big", "user_id": "u",
                                "merchant_id": "m", "amount": 5, "timestamp": "2026-11-21T08:00:00Z",
                                "padding": "x" * 20_000})),
    ("empty", None),
]  # fmt: skip


def test_scores_every_transaction_and_dead_letters_poison(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack
) -> None:
    world = make_world()
    records = stream_records(seed=21, n=400)
    records[0]["loyalty_tier"] = "gold"  # a field from a newer producer: accepted
    produce_records(kafka, world.transactions, records[:200])
    produce(kafka, world.transactions, [(b"poison", value) for _, value in POISON])
    produce_records(kafka, world.transactions, records[200:])

    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        scores = values(read_topic(kafka, world.scores, expect=len(records), timeout_s=120))
        alerts = values(read_topic(kafka, world.alerts))
        letters = read_topic(kafka, world.topics.topic_transactions_dlq, expect=len(POISON))

        # Every valid transaction scored exactly once, and only those.
        assert sorted(s["transaction_id"] for s in scores) == sorted(
            r["transaction_id"] for r in records
        )
        for score in scores:
            validate("scores", score)

        # Alerts: exactly the scores at or over the threshold, explained.
        model = httpx.get(scorer.url + "/model").json()
        over = {s["transaction_id"] for s in scores if s["score"] >= model["threshold"]}
        assert over, "the test model should alert on some of the stream"
        assert {a["transaction_id"] for a in alerts} == over
        for alert in alerts:
            validate("alerts", alert)
            assert 1 <= len(alert["reasons"]) <= 3
            assert all(
                any(ch.isdigit() for ch in r["text"]) or r["value"] == 1 for r in alert["reasons"]
            )
            assert alert["model_version"] == model["version"]

        # Poison: each in the DLQ with its original bytes, reason and source position.
        assert len(letters) == len(POISON)
        by_reason: dict[str, list[bytes | None]] = {}
        positions = set()
        for msg in letters:
            headers = kafka_headers(msg)
            assert headers["dlq.source.topic"] == world.transactions
            positions.add((int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"])))
            by_reason.setdefault(headers["dlq.reason"], []).append(msg.value())
        # All poison shares one key, so one partition, at consecutive offsets.
        assert len({p for p, _ in positions}) == 1
        offsets = sorted(o for _, o in positions)
        assert offsets == list(range(offsets[0], offsets[0] + len(POISON)))
        for reason, value in POISON:
            assert value in by_reason[reason], reason
        # orjson places a NaN only by column; the letter names the field.
        [nan_letter] = [m for m in letters if m.value() == POISON[1][1]]
        assert kafka_headers(nan_letter)["dlq.field"] == "amount"

        metrics = httpx.get(scorer.url + "/metrics").text
        assert 'scorer_dlq_total{reason="oversized"} 1.0' in metrics
        assert "scorer_unknown_fields_total 1.0" in metrics
    finally:
        assert scorer.stop() == 0, scorer.tail()


def test_http_score_is_read_only_and_matches_the_stream(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack
) -> None:
    world = make_world(partitions=1)
    records = stream_records(seed=22, n=50)
    produce_records(kafka, world.transactions, records)
    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        scores = {
            s["transaction_id"]: s for s in values(read_topic(kafka, world.scores, expect=50))
        }
        client = redis.Redis.from_url(stack.redis_url)
        state_before = {k: client.dump(k) for k in client.keys(f"{world.key_prefix}:*")}

        answer = httpx.post(scorer.url + "/score", content=orjson.dumps(records[-1])).json()
        assert answer["score"] == scores[records[-1]["transaction_id"]]["score"]
        fresh = {
            **records[-1],
            "transaction_id": "never-seen",
            "timestamp": records[-1]["timestamp"],
        }
        batch = httpx.post(scorer.url + "/score", content=orjson.dumps([fresh, records[0]])).json()
        assert [b["transaction_id"] for b in batch] == ["never-seen", records[0]["transaction_id"]]
        assert {k: client.dump(k) for k in client.keys(f"{world.key_prefix}:*")} == state_before

        bad = httpx.post(
            scorer.url + "/score", content=orjson.dumps({**records[0], "amount": "ten"})
        )
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["field"] == "amount"
    finally:
        scorer.stop()


def test_sigkill_several_times_changes_no_output(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack, one_day: OneDay
) -> None:
    """Kill -9 the scorer mid-stream, again and again: the committed output equals an
    uninterrupted run's, message for message, and no merchant count is doubled."""
    records = one_day.records
    # Every batch overlaps with the next (the default overlaps only large ones).
    world = make_world(partitions=6, SCORER_BATCH_MAX_SIZE="25", SCORER_OVERLAP_MIN_BATCH="1")
    chunks = [records[i : i + 250] for i in range(0, len(records), 250)]
    produce_records(kafka, world.transactions, chunks[0])
    progress = []
    # Each round: start, feed more input while it runs, kill -9 mid-stream.
    for round_no, delay in enumerate((0.4, 0.1, 0.8, 0.25)):
        scorer = world.start_scorer("crashy")  # a supervisor restarts the same instance
        scorer.wait_ready()
        produce_records(kafka, world.transactions, chunks[round_no + 1])
        time.sleep(delay)
        scorer.kill()
        progress.append(len(read_topic(kafka, world.scores, timeout_s=10)))
    for chunk in chunks[5:]:
        produce_records(kafka, world.transactions, chunk)
    mid_stream = [n for n in progress if 0 < n < len(records)]
    assert len(mid_stream) >= 2, f"kills did not land mid-stream: committed {progress}"
    final = world.start_scorer("crashy")
    try:
        final.wait_ready()
        assert_same_output(world, kafka, stack, one_day)
    finally:
        final.stop()


def test_rebalance_one_three_one_changes_no_output(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack, one_day: OneDay
) -> None:
    """Scale 1 -> 3 -> 1 scorers in one group while the stream flows."""
    records = one_day.records
    world = make_world(partitions=6, SCORER_BATCH_MAX_SIZE="50", SCORER_OVERLAP_MIN_BATCH="1")
    chunks = [records[i : i + 300] for i in range(0, len(records), 300)]
    first = world.start_scorer("one")
    extra = []
    try:
        first.wait_ready()
        produce_records(kafka, world.transactions, chunks[0])
        extra = [world.start_scorer("two"), world.start_scorer("three")]
        produce_records(kafka, world.transactions, chunks[1])
        for scorer in extra:
            scorer.wait_ready()

        def spread() -> bool:
            logs = [s.log.read_text() for s in [first, *extra]]
            return sum("partitions assigned" in log for log in logs) >= 2

        # The first instance hears of the rebalance at its next heartbeat (3 s) and the
        # cooperative protocol takes two rounds: wait for the group to spread, bounded.
        wait_until(spread, 60, "the group to spread over the new instances")
        produce_records(kafka, world.transactions, chunks[2])
        time.sleep(2)  # let the spread group score some of it before scaling back
        for scorer in extra:
            assert scorer.stop() == 0, scorer.tail()
        for chunk in chunks[3:]:
            produce_records(kafka, world.transactions, chunk)
        assert_same_output(world, kafka, stack, one_day)
    finally:
        for scorer in [first, *extra]:
            scorer.stop()


def _assigned(log: str) -> set[int]:
    """Partitions a scorer's log says it was given (cooperative: increments add up)."""
    found: set[int] = set()
    for match in re.finditer(r"partitions assigned partitions=([0-9,]+)", log):
        found |= {int(p) for p in match.group(1).split(",")}
    return found


def test_a_frozen_scorer_that_lost_its_partitions_changes_no_output(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack, one_day: OneDay
) -> None:
    """A scorer frozen mid-stream (SIGSTOP: a long GC pause, a stalled VM) loses its
    partitions when its session expires, and another scorer carries on from the last
    commit. Thawed, the first finishes what it was doing as a zombie: its user-state writes
    are refused where the new owner wrote those users since, its Kafka transaction is
    fenced. The committed output is still an uninterrupted run's, message for message."""
    records = one_day.records
    world = make_world(
        partitions=6,
        # Small batches: the second chunk takes dozens of Kafka transactions, so a scorer
        # frozen while committing it (asserted below) is almost always inside one.
        SCORER_BATCH_MAX_SIZE="5",
        SCORER_OVERLAP_MIN_BATCH="1",
        SCORER_SESSION_TIMEOUT_MS="6000",
    )
    chunks = [records[i : i + 300] for i in range(0, len(records), 300)]
    zombie = world.start_scorer("zombie")
    owner = None
    frozen = False
    try:
        zombie.wait_ready()
        produce_records(kafka, world.transactions, chunks[0])
        wait_until(lambda: "partitions assigned" in zombie.log.read_text(), 30, "an assignment")
        produce_records(kafka, world.transactions, chunks[1])
        # Freeze it mid-stream: once the second chunk has begun to be committed (a fixed
        # sleep was not enough once the scorer stopped idling between batches).
        deadline = time.monotonic() + 60
        while (scored := committed_scores(zombie)) <= len(
            chunks[0]
        ) and time.monotonic() < deadline:
            time.sleep(0.002)
        zombie.proc.send_signal(signal.SIGSTOP)
        frozen = True
        assert len(chunks[0]) < scored < len(chunks[0]) + len(chunks[1]), scored
        owner = world.start_scorer("owner")
        owner.wait_ready()
        for chunk in chunks[2:4]:
            produce_records(kafka, world.transactions, chunk)
        wait_until(
            lambda: _assigned(owner.log.read_text()) == set(range(6)),
            60,
            "the new scorer to own every partition",
        )
        time.sleep(2)  # it writes users the frozen one has read
        before_thaw = len(zombie.log.read_text())
        zombie.proc.send_signal(signal.SIGCONT)
        frozen = False
        for chunk in chunks[4:]:
            produce_records(kafka, world.transactions, chunk)
        assert_same_output(world, kafka, stack, one_day)
        # The zombie really was one: after the thaw, its batch in flight was refused.
        after = zombie.log.read_text()[before_thaw:]
        assert (
            "user state written by another scorer" in after or "aborting kafka transaction" in after
        ), zombie.tail()
    finally:
        if frozen:
            zombie.proc.send_signal(signal.SIGCONT)
        for scorer in (zombie, owner):
            if scorer is not None:
                scorer.stop()


def test_hot_model_swap_loses_no_message(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack
) -> None:
    name = f"swap-test-{uuid.uuid4().hex[:8]}"
    register(stack.mlflow_uri, name, isolation_model(seed=2))
    world = make_world(partitions=3, model_name=name, SCORER_OVERLAP_MIN_BATCH="1")
    before, during, after = (stream_records(seed=s, n=300) for s in (31, 32, 33))
    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        produce_records(kafka, world.transactions, before)
        read_topic(kafka, world.scores, expect=300, timeout_s=60)
        produce_records(kafka, world.transactions, during)
        new_version = register(stack.mlflow_uri, name, isolation_model(seed=3, alert_share=0.05))
        wait_until(
            lambda: httpx.get(scorer.url + "/model").json()["version"] == new_version,
            60,
            "the scorer to follow the alias",
        )
        produce_records(kafka, world.transactions, after)
        messages = read_topic(kafka, world.scores, expect=900, timeout_s=120)
    finally:
        scorer.stop()
    scores = values(messages)
    assert sorted(s["transaction_id"] for s in scores) == sorted(
        r["transaction_id"] for r in before + during + after
    )
    version = {s["transaction_id"]: s["model_version"] for s in scores}
    assert {version[r["transaction_id"]] for r in before} == {"1"}
    assert {version[r["transaction_id"]] for r in after} == {new_version}
    # Per partition the switch happens once, between batches: never back to the old one.
    by_partition: dict[int, list[str]] = {}
    for msg, score in zip(messages, scores, strict=True):
        by_partition.setdefault(msg.partition() or 0, []).append(score["model_version"])
    for sequence in by_partition.values():
        switched = [i for i in range(1, len(sequence)) if sequence[i] != sequence[i - 1]]
        assert len(switched) <= 1, sequence


def test_labels_fold_into_merchant_state_and_bad_labels_dead_letter(
    make_world: Callable[..., Deployment], kafka: dict[str, str], stack: TestStack
) -> None:
    world = make_world(partitions=1)
    merchant = f"m-{uuid.uuid4().hex[:8]}"
    label = {
        "schema_version": 1, "transaction_id": "t-1", "user_id": "u", "merchant_id": merchant,
        "label": "fraud", "source": "chargeback", "available_at": "2026-11-20T10:00:00Z",
    }  # fmt: skip
    messages = [
        (b"t-1", orjson.dumps(label)),
        (b"t-1", orjson.dumps({**label, "source": "analyst"})),  # same transaction again
        (b"t-2", orjson.dumps({**label, "transaction_id": "t-2", "label": "legit"})),
        (b"bad", orjson.dumps({**label, "label": "maybe"})),
    ]
    produce(kafka, world.labels, messages)
    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        store = FeatureStore(redis.Redis.from_url(stack.redis_url), world.key_prefix)
        wait_until(
            lambda: bool(store.merchant_state(merchant).frauds), 30, "the fraud label to be folded"
        )
        letters = read_topic(kafka, world.topics.topic_labels_dlq, expect=1, timeout_s=30)
        time.sleep(1)
        # Counted once, from the first label's available_at; the legit label not at all.
        assert store.merchant_state(merchant).frauds == {"t-1": 1795168800000}
        headers = kafka_headers(letters[0])
        assert headers["dlq.reason"] == "schema_violation"
        assert headers["dlq.field"] == "label"
    finally:
        scorer.stop()
