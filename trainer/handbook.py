"""The fraud handbook's dataset as the trainer and the benchmarks use it: where the shared
file is, the book's published figures, and the window of rows its benchmark reads."""

from __future__ import annotations

from pathlib import Path

from fraudcore.settings import REPO_ROOT
from trainer.holdout import book_holdout
from trainer.pipeline import DataRequest

HANDBOOK_FILE = REPO_ROOT.parent / "shared" / "datasets" / "fraud-handbook" / "transactions.csv.gz"
# The book's published Chapter 3 figures (AUC ROC, AP, CP@100) and the best tuned one.
BOOK_BASELINES = {
    "logistic regression (ch. 3)": (0.871, 0.606, 0.291),
    "random forest (ch. 3)": (0.867, 0.658, 0.287),
    "XGBoost (ch. 3)": (0.862, 0.639, 0.273),
    "XGBoost tuned (ch. 5, 4 folds)": (0.869, 0.687, 0.303),
}
FIGURES = ("roc_auc", "average_precision", "card_precision_at_100")


def handbook_data(path: Path, train_days: int) -> DataRequest:
    """The handbook's rows from 31 days before training (full 30-day windows) to the end
    of the book's test week, labels 7 days late."""
    return DataRequest(
        path=path,
        preset="handbook",
        since=book_holdout(train_days).train_start - 31 * 86400.0,
        until=book_holdout().test_end,
        label_delay_s=7 * 86400.0,
    )


def book_baselines() -> dict[str, dict[str, float]]:
    return {k: dict(zip(FIGURES, v, strict=True)) for k, v in BOOK_BASELINES.items()}
