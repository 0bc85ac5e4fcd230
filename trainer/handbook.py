"""The fraud handbook's dataset as the trainer and the benchmarks use it: where the shared
file is, the book's published figures, and the window of rows its benchmark reads.

The book's baselines that the benchmarks report are computed on the file
(trainer.book_recipe); the figures here are only the ones the book printed, to compare."""

from __future__ import annotations

from pathlib import Path

from fraudcore.settings import REPO_ROOT
from trainer.holdout import Holdout, book_holdout
from trainer.pipeline import DataRequest

HANDBOOK_FILE = REPO_ROOT.parent / "shared" / "datasets" / "fraud-handbook" / "transactions.csv.gz"
FIGURES = ("roc_auc", "average_precision", "card_precision_at_100")
# Published, not computed: the figures (AUC ROC, AP, CP@100) the book prints for its
# Chapter 3 baselines on its test set (BaselineModeling), by the names of
# trainer.book_recipe.BOOK_MODELS.
PUBLISHED_CH3 = {
    "logistic regression": (0.871, 0.606, 0.291),
    "decision tree, depth 2": (0.763, 0.496, 0.241),
    "random forest": (0.867, 0.658, 0.287),
    "XGBoost": (0.862, 0.639, 0.273),
}
# Published, not computed: Chapter 5's tuned XGBoost, mean of 4 other test weeks (not the
# Chapter 3 test set).
PUBLISHED_CH5 = {"XGBoost tuned": (0.869, 0.687, 0.303)}


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


def handbook_folds_data(path: Path, holdouts: list[Holdout]) -> DataRequest:
    """The handbook's rows for several folds: from 31 days before the first training day to
    the end of the last test day, labels 7 days late."""
    return DataRequest(
        path=path,
        preset="handbook",
        since=holdouts[0].train_start - 31 * 86400.0,
        until=holdouts[-1].test_end,
        label_delay_s=7 * 86400.0,
    )


def as_figures(table: dict[str, tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    """(AUC ROC, AP, CP@100) triples as {roc_auc, average_precision, card_precision_at_100}."""
    return {k: dict(zip(FIGURES, v, strict=True)) for k, v in table.items()}
