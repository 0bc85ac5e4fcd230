"""trainer.pipeline: the threshold comes from the test period, and the holdout leaves the
newest labels time to arrive."""

from __future__ import annotations

import numpy as np
import pytest

from fraudcore.features import FEATURE_NAMES
from fraudcore.model import FraudModel
from trainer.holdout import Holdout, auto_holdout
from trainer.pipeline import recalibrate_threshold

HOLDOUT = Holdout(
    train_start=0.0, train_end=86_400.0 * 20, test_start=86_400.0 * 27, test_end=86_400.0 * 34
)


def _model(threshold: float) -> FraudModel:
    return FraudModel(FEATURE_NAMES, {}, threshold, [])


def test_the_budget_share_of_recent_scores_alerts() -> None:
    # Recent scores sit lower than the training ones did (threshold 0.999 there).
    recent = np.random.default_rng(1).beta(2, 8, 40_000)
    model = _model(0.999)
    recalibrate_threshold(model, recent, 0.005, HOLDOUT)
    share = float(np.mean(recent >= model.threshold))
    assert 0.0045 <= share <= 0.0055
    assert model.metadata["threshold_on_training"] == 0.999
    assert model.metadata["threshold_from"].startswith("test period 1970-01-28")


def test_a_test_period_too_small_keeps_the_training_threshold() -> None:
    model = _model(0.97)
    recalibrate_threshold(model, np.linspace(0, 1, 1000), 0.005, HOLDOUT)  # 5 alerts expected
    assert model.threshold == 0.97
    assert "too small" in model.metadata["threshold_from"]


def test_the_test_period_ends_a_label_delay_before_the_newest_data() -> None:
    day = 86_400.0
    holdout = auto_holdout(0.0, 70 * day, test_fraction=0.25, gap_s=8 * day, warmup_s=30 * day,
                           mature_s=8 * day)  # fmt: skip
    assert holdout.train_start == 30 * day
    assert holdout.test_end == pytest.approx(62 * day)
    assert holdout.test_end - holdout.test_start == pytest.approx(8 * day)
    assert holdout.test_start - holdout.train_end == pytest.approx(8 * day)
    # Too little data for the whole maturation: shrunk to a quarter of the span.
    short = auto_holdout(0.0, 4 * day, test_fraction=0.25, gap_s=0.0, mature_s=8 * day)
    assert short.test_end == pytest.approx(3 * day)
