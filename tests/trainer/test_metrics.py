"""Card precision@k on a hand-made example, and the other holdout figures."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import card_precision_at_k, evaluate

DAY = 86_400.0


def _cases() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # (day, card, score, fraud)
    rows = [
        (0, "A", 0.90, 1), (0, "B", 0.80, 0), (0, "B", 0.30, 0), (0, "C", 0.70, 1),
        (0, "D", 0.10, 0),
        (1, "A", 0.99, 1), (1, "B", 0.20, 0), (1, "C", 0.60, 1), (1, "C", 0.10, 0),
        (1, "D", 0.50, 1),
        (2, "E", 0.40, 1),
    ]  # fmt: skip
    ts = np.array([r[0] * DAY + 3600 for r in rows])
    cards = np.array([r[1] for r in rows], dtype=object)
    scores = np.array([r[2] for r in rows])
    frauds = np.array([r[3] for r in rows])
    return ts, cards, scores, frauds


def test_card_precision_follows_the_handbook_definition() -> None:
    ts, cards, scores, frauds = _cases()
    mean, per_day = card_precision_at_k(ts, cards, scores, frauds, k=2)
    # Day 0: top 2 by max score are A (fraud) and B (legit) -> 1/2; A is now detected.
    # Day 1: A is removed although it scores highest; C (max 0.6, has a fraud) and
    #        D (0.5, fraud) -> 2/2. Day 2: only E, still divided by k -> 1/2.
    assert per_day == [0.5, 1.0, 0.5]
    assert mean == pytest.approx(2 / 3)


def test_card_level_truth_uses_any_fraud_of_the_day() -> None:
    ts, cards, scores, frauds = _cases()
    # B's low-scored transaction on day 0 becomes a fraud: B is compromised that day and
    # its max score (0.8, from a legit transaction) ranks it.
    frauds = frauds.copy()
    frauds[2] = 1
    _, per_day = card_precision_at_k(ts, cards, scores, frauds, k=2)
    assert per_day[0] == 1.0
    # B was detected on day 0, so day 1 ranks C and D only.
    assert per_day[1] == 1.0


def test_evaluate_reports_budget_and_scenarios() -> None:
    ts, cards, scores, frauds = _cases()
    scenarios = ["card" if f else None for f in frauds]
    scenarios[0] = "terminal"
    figures = evaluate(scores, frauds, ts, cards, threshold=0.65, scenarios=scenarios, k=2)
    alerts = scores >= 0.65  # rows 0, 1, 3, 5
    assert figures["precision_at_budget"] == pytest.approx(3 / 4)
    assert figures["recall_at_budget"] == pytest.approx(3 / int(frauds.sum()))
    assert figures["alert_rate"] == pytest.approx(alerts.mean())
    assert figures["recall_at_budget.terminal"] == 1.0
    assert figures["recall_at_budget.card"] == pytest.approx(2 / 5)
    assert 0.5 < figures["roc_auc"] <= 1.0


def test_evaluate_without_both_classes_reports_no_ranking_figures() -> None:
    ts, cards, scores, _ = _cases()
    figures = evaluate(scores, np.zeros(scores.size, dtype=int), ts, cards, threshold=0.5)
    assert "average_precision" not in figures and "roc_auc" not in figures
    assert figures["frauds"] == 0
