"""No label leakage: a label counts only from its available_at on, for features and for
training targets; test days leave out cards already known compromised."""

from __future__ import annotations

from typing import Any

import numpy as np

from fraudcore.contracts import format_time
from fraudcore.features import FEATURE_INDEX
from trainer.dataset import build_table
from trainer.holdout import Holdout, make_split
from trainer.labels import Label
from trainer.sources import Event, Transaction

HOUR = 3600.0
DAY = 86_400.0
T0 = 1_750_000_000.0 - (1_750_000_000.0 % DAY)  # a UTC midnight


def _tx(tid: str, user: str, merchant: str, ts: float, amount: float = 20.0) -> Transaction:
    record: dict[str, Any] = {
        "schema_version": 1, "transaction_id": tid, "user_id": user, "merchant_id": merchant,
        "amount": amount, "timestamp": format_time(ts),
    }  # fmt: skip
    return Transaction(record, ts)


def test_a_label_known_later_never_reaches_earlier_features() -> None:
    # The fraud label of A becomes available 10 h after A; the builder is told about it up
    # front (the worst case: the trainer read the whole labels topic first).
    label = Label("A", "M", "u1", "fraud", T0 + 10 * HOUR)
    events: list[Event] = [
        label,
        _tx("A", "u1", "M", T0),
        _tx("B", "u2", "M", T0 + 5 * HOUR),  # before the label is known
        _tx("C", "u3", "M", T0 + 10 * HOUR),  # exactly when it becomes known
        _tx("D", "u4", "M", T0 + 11 * HOUR),
    ]
    table = build_table(events)
    fraud_1d = table.features[:, FEATURE_INDEX["merchant_fraud_count_1d"]]
    assert list(fraud_1d) == [0.0, 0.0, 1.0, 1.0]
    # The fraud transaction itself never sees its own label either.
    assert table.features[0, FEATURE_INDEX["merchant_fraud_count_30d"]] == 0.0


def test_training_targets_are_the_labels_known_when_the_model_goes_live() -> None:
    events: list[Event] = [
        Label("early", "M1", "u1", "fraud", T0 + 1 * DAY),  # known before the test start
        Label("late", "M2", "u2", "fraud", T0 + 9 * DAY),  # known only after it
        _tx("early", "u1", "M1", T0 + 1 * HOUR),
        _tx("late", "u2", "M2", T0 + 2 * HOUR),
        _tx("legit", "u3", "M3", T0 + 3 * HOUR),
        _tx("test", "u4", "M4", T0 + 5 * DAY),
    ]
    table = build_table(events)
    holdout = Holdout(T0, T0 + 2 * DAY, T0 + 4 * DAY, T0 + 6 * DAY)
    split = make_split(table, holdout)
    by_id = dict(zip(table.transaction_ids[split.train_rows], split.train_targets, strict=True))
    assert by_id == {"early": 1, "late": 0, "legit": 0}
    # The same label does count as truth for evaluation (asked with no cutoff).
    assert list(table.labels.targets(["late"])) == [1]


def test_test_days_leave_out_cards_known_compromised_before_the_day() -> None:
    events: list[Event] = [
        Label("f1", "M", "card1", "fraud", T0 + 4 * DAY - HOUR),  # known before day 4
        Label("f2", "M", "card2", "fraud", T0 + 5 * DAY + HOUR),  # known during day 5
        _tx("f1", "card1", "M", T0 + HOUR),
        _tx("f2", "card2", "M", T0 + 2 * HOUR),
        _tx("x1", "card1", "M", T0 + 4 * DAY + HOUR),  # card1 already known: left out
        _tx("x2", "card2", "M", T0 + 5 * DAY + 2 * HOUR),  # known only during day 5: kept
        _tx("x3", "card2", "M", T0 + 6 * DAY + HOUR),  # known before day 6: left out
        _tx("x4", "card3", "M", T0 + 6 * DAY + 2 * HOUR),
    ]
    table = build_table(events)
    split = make_split(table, Holdout(T0, T0 + DAY, T0 + 4 * DAY, T0 + 7 * DAY))
    assert sorted(table.transaction_ids[split.test_rows]) == ["x2", "x4"]
    assert split.excluded_known_compromised == 2
    assert np.all(split.test_targets == 0)
