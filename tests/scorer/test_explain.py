"""scorer.explain.Explainer.reasons against the implementation it replaced, value for value.

`reference_reasons` is the earlier reasons() (a Python loop over every candidate feature
of every alert), kept here as the reference; the current one ranks all alerts at once."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fraudcore.features import FEATURE_INDEX, FEATURE_NAMES, FEATURES, reason_text
from fraudcore.model import QUANTILE_LEVELS
from scorer import explain
from tests.scorer.test_pipeline_outputs import EDGE_VALUES, explainer_for


def reference_reasons(ex: explain.Explainer, rows: np.ndarray) -> list[list[dict[str, Any]]]:
    if rows.shape[0] == 0 or not ex.candidates:
        return [[] for _ in range(rows.shape[0])]
    values = rows[:, ex.candidates]
    tail = np.empty_like(values)
    for k, quantiles in enumerate(ex.quantiles):
        position = np.interp(values[:, k], quantiles, QUANTILE_LEVELS, left=0.0, right=1.0)
        tail[:, k] = position if ex.high[k] else 1.0 - position
    tail[np.isnan(values)] = -np.inf
    out = []
    for r in range(rows.shape[0]):
        row = rows[r]
        usuals = [ex.usual(row, i) for i in ex.candidates]
        ranked = sorted(
            (
                tail[r, k] + (min(values[r, k] / u, 1e3) * 1e-6 if ex.high[k] and u else 0.0),
                k,
            )
            for k, u in enumerate(usuals)
            if tail[r, k] > -np.inf
        )
        picked = []
        for _, k in reversed(ranked[-ex.top :]):
            index = ex.candidates[k]
            value = float(row[index])
            picked.append(
                {
                    "feature": FEATURES[index].name,
                    "value": value,
                    "usual": usuals[k],
                    "text": reason_text(FEATURES[index].name, value, usuals[k]),
                }
            )
        out.append(picked)
    return out


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.lognormal(1.0, 2.0, (n, len(FEATURE_NAMES)))
    rows[rng.random(rows.shape) < 0.2] = np.nan
    edges = rng.random(rows.shape) < 0.05
    rows[edges] = rng.choice(EDGE_VALUES, int(edges.sum()))
    # Ties: many rows far past the training maximum of the same features, so the rank
    # comes down to the multiple of usual, and then to the feature's order.
    rows[::5, FEATURE_INDEX["user_txn_count_1m"]] = 1e9
    rows[::5, FEATURE_INDEX["user_txn_count_10m"]] = 1e9
    rows[::10, FEATURE_INDEX["user_txn_count_30d"]] = 0.0  # usual 0: no multiple
    rows[::15, FEATURE_INDEX["user_txn_count_30d"]] = np.inf  # usual from the median
    rows[3] = np.nan  # nothing to offer
    return rows


def _same(got: list[list[dict[str, Any]]], want: list[list[dict[str, Any]]]) -> bool:
    def canonical(reasons: list[list[dict[str, Any]]]) -> list[list[tuple[Any, ...]]]:
        return [
            [
                (
                    r["feature"],
                    r["text"],
                    repr(r["value"]),
                    None if r["usual"] is None else repr(r["usual"]),
                )
                for r in row
            ]
            for row in reasons
        ]

    return canonical(got) == canonical(want)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the huge edge values
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reasons_equal_the_reference(seed: int) -> None:
    reference = _rows(400, seed=100 + seed)
    explainer = explainer_for(np.where(np.isfinite(reference), reference, np.nan))
    # A feature without a usual value: no training median, no usual_from.
    explainer.median[FEATURE_INDEX["user_distance_km_prev"]] = np.nan
    rows = _rows(500, seed=seed)
    got = explainer.reasons(rows)
    want = reference_reasons(explainer, rows)
    assert _same(got, want)
    assert got[3] == []
    assert sum(len(r) == explainer.top for r in got) > 400  # most rows have 3 reasons
    usuals = [r["usual"] for row in got for r in row]
    assert any(u is None for u in usuals) and any(
        isinstance(u, float) and math.isfinite(u) for u in usuals
    )


def test_no_rows_no_reasons() -> None:
    rows = _rows(50, seed=9)
    explainer = explainer_for(rows)
    assert explainer.reasons(rows[:0]) == []
