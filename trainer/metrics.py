"""Evaluation figures: ROC AUC, average precision, card precision@k (as the Fraud
Detection Handbook defines it), precision/recall at the alert budget, recall per scenario."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

DAY_S = 86_400.0


def card_precision_at_k(
    event_ts: np.ndarray,
    cards: np.ndarray,
    scores: np.ndarray,
    frauds: np.ndarray,
    k: int = 100,
) -> tuple[float, list[float]]:
    """Mean over UTC days of: among the k cards with the highest max score that day, the
    share that are compromised (a fraud that day). A card found compromised in the top k of
    an earlier day is removed from later days. Fewer than k cards still divide by k."""
    days = np.floor(event_ts / DAY_S)
    detected: set[object] = set()
    per_day: list[float] = []
    for day in np.unique(days):
        idx = np.flatnonzero(days == day)
        best: dict[object, tuple[float, int]] = {}
        for card, score, fraud in zip(cards[idx], scores[idx], frauds[idx], strict=True):
            if card in detected:
                continue
            previous = best.get(card)
            if previous is None:
                best[card] = (float(score), int(fraud))
            else:
                best[card] = (max(previous[0], float(score)), max(previous[1], int(fraud)))
        # Highest max score first; ties keep first-seen order (stable sort).
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:k]
        hits = [card for card, (_, fraud) in ranked if fraud]
        per_day.append(len(hits) / k)
        detected.update(hits)
    return (float(np.mean(per_day)) if per_day else float("nan")), per_day


def evaluate(
    scores: np.ndarray,
    targets: np.ndarray,
    event_ts: np.ndarray,
    cards: np.ndarray,
    threshold: float,
    scenarios: Sequence[str | None] | None = None,
    k: int = 100,
) -> dict[str, float]:
    """Every figure that can be computed; ranking figures need both classes present."""
    out: dict[str, float] = {"rows": float(scores.size), "frauds": float(targets.sum())}
    alerts = scores >= threshold
    out["alert_rate"] = float(alerts.mean()) if scores.size else float("nan")
    has_both = 0 < targets.sum() < targets.size
    if not has_both:
        return out
    out["roc_auc"] = float(roc_auc_score(targets, scores))
    out["average_precision"] = float(average_precision_score(targets, scores))
    out[f"card_precision_at_{k}"] = card_precision_at_k(event_ts, cards, scores, targets, k)[0]
    true_alerts = int((alerts & (targets == 1)).sum())
    out["precision_at_budget"] = true_alerts / int(alerts.sum()) if alerts.any() else 0.0
    out["recall_at_budget"] = true_alerts / int(targets.sum())
    if scenarios is not None:
        totals: Counter[str] = Counter()
        caught: Counter[str] = Counter()
        for scenario, alerted, target in zip(scenarios, alerts, targets, strict=True):
            if target and scenario is not None:
                totals[scenario] += 1
                caught[scenario] += int(alerted)
        for scenario, total in sorted(totals.items()):
            out[f"recall_at_budget.{scenario}"] = caught[scenario] / total
    return out
