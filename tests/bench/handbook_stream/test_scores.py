"""The streaming half of `handbook-stream` without Kafka: score messages as the scorer writes
them, in partition order with a repeat and a broken one, judged like the offline table."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest

from bench.handbook_stream.scores import ScoreCollector, compare_rows, stream_figures
from fraudcore.contracts import format_time
from fraudcore.features import FEATURE_INDEX, FEATURE_NAMES
from trainer.dataset import build_table
from trainer.holdout import Holdout, make_split
from trainer.labels import Label, LabelBook
from trainer.metrics import evaluate
from trainer.sources import Event, Transaction
from trainer.timeutil import iso

DAY = 86_400.0
T0 = 1_750_000_000.0 - (1_750_000_000.0 % DAY)  # a UTC midnight
HOLDOUT = Holdout(T0, T0 + 3 * DAY, T0 + 4 * DAY, T0 + 7 * DAY)


def _events() -> list[Event]:
    """Six days, 12 cards, 4 merchants; card c0 is compromised on day 1 (known on day 3)
    and cards c1, c6, c9 on test days (every other day of theirs)."""
    rng = random.Random(5)
    events: list[Event] = []
    for n in range(360):
        ts = T0 + n * (6 * DAY / 360)
        card, merchant = f"c{n % 12}", f"m{n % 4}"
        record: dict[str, Any] = {
            "schema_version": 1, "transaction_id": f"t{n}", "user_id": card,
            "merchant_id": merchant, "amount": round(rng.uniform(5, 200), 2),
            "timestamp": format_time(ts),
        }  # fmt: skip
        fraud = (card == "c0" and DAY <= ts - T0 < 2 * DAY) or (
            card in ("c1", "c6", "c9") and ts - T0 >= 4 * DAY and n % 24 < 12
        )
        if fraud:
            events.append(Label(f"t{n}", merchant, card, "fraud", ts + 2 * DAY))
        events.append(Transaction(record, ts))
    return sorted(events, key=lambda e: e.available_ts if isinstance(e, Label) else e.event_ts)


def _score(features: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-features[:, FEATURE_INDEX["amount"]] / 100))


def _message(table: Any, row: int, score: float, vector: np.ndarray, batch: float = T0) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "transaction_id": table.transaction_ids[row],
            "user_id": table.user_ids[row],
            "merchant_id": "m",
            "event_time": format_time(table.event_ts[row]),
            "score": float(score),
            "model_name": "m",
            "model_version": "1",
            # orjson writes NaN as null, like the scorer.
            "features": dict(zip(FEATURE_NAMES, vector.tolist(), strict=True)),
            "processed_at": format_time(batch),
        }
    )


def test_streamed_scores_get_the_offline_split_exclusion_and_figures() -> None:
    events = _events()
    offline = build_table(events)
    split = make_split(offline, HOLDOUT)
    assert split.excluded_known_compromised > 0  # the exclusion has work to do
    assert 0 < split.test_targets.sum() < split.test_targets.size
    scores = _score(offline.features)
    lagging = int(split.test_rows[5])  # a row whose label fold came too late online
    column = FEATURE_INDEX["merchant_fraud_count_30d"]
    messages = []
    for row in range(len(offline)):
        vector = offline.features[row].copy()
        if row == lagging:
            vector[column] -= 1
        messages.append(_message(offline, row, scores[row], vector))
    # Partitions interleave: arrival order is not event-time order.
    random.Random(1).shuffle(messages)
    messages += [messages[0], b'{"schema_version": 1}']

    collector = ScoreCollector()
    for raw in messages:
        collector.add(raw)
    assert (len(collector), collector.duplicates) == (len(offline), 1)
    assert collector.invalid == {"missing_field": 1}

    truth = LabelBook()
    for event in events:
        if isinstance(event, Label):
            truth.add(event)
    stream, stream_scores = collector.table(truth)
    assert np.all(np.diff(stream.event_ts) >= 0)
    stream_split, figures = stream_figures(stream, stream_scores, HOLDOUT, threshold=0.8)

    rows = split.test_rows
    assert list(stream.transaction_ids[stream_split.test_rows]) == list(
        offline.transaction_ids[rows]
    )
    assert stream_split.excluded_known_compromised == split.excluded_known_compromised
    expected = evaluate(
        scores[rows], split.test_targets, offline.event_ts[rows], offline.user_ids[rows], 0.8
    )
    for key in ("roc_auc", "average_precision", "card_precision_at_100", "rows", "frauds"):
        assert figures[key] == pytest.approx(expected[key])

    comparison = compare_rows(offline, rows, scores, stream, stream_split.test_rows, stream_scores)
    assert comparison["common_rows"] == rows.size
    assert comparison["only_offline"] == comparison["only_stream"] == 0
    assert comparison["differing_feature_rows"] == 1
    assert comparison["differing_features"] == {
        "merchant_fraud_count_30d": {
            "rows": 1,
            "lower_online": 1,
            "higher_online": 0,
            "mean_offline_minus_online": 1.0,
        }
    }
    lagging_at = iso(offline.event_ts[lagging])
    assert comparison["differing_first"] == comparison["differing_last"] == lagging_at
    assert comparison["max_score_gap_identical_features"] == 0.0


def test_partition_skew_is_measured_within_each_scorer_batch() -> None:
    table = build_table(_events())
    vector = table.features[0]
    collector = ScoreCollector()
    # Batch 1: partition 1 is 2 h ahead of partition 0 (its latest event counts).
    for row, partition in ((0, 0), (2, 1), (1, 1)):
        collector.add(_message(table, row, 0.5, vector, batch=T0 + 1), partition)
    # Batch 2 holds one partition only: nothing to compare.
    collector.add(_message(table, 30, 0.5, vector, batch=T0 + 2), 2)
    hours = (table.event_ts[2] - table.event_ts[0]) / 3600
    assert collector.partition_skew_hours() == {
        "batches": 1.0,
        "median": round(hours, 2),
        "p90": round(hours, 2),
        "max": round(hours, 2),
    }
