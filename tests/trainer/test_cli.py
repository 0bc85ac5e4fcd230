"""The trainer's command line on small files (no Kafka, no MLflow registry needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.trainer.synth import handbook_file
from trainer.book_recipe import BOOK_MODELS
from trainer.cli import app
from trainer.handbook import FIGURES, PUBLISHED_CH3


def test_handbook_reports_ours_beside_the_book_recipe_computed_on_the_same_file(
    tmp_path: Path,
) -> None:
    data = handbook_file(tmp_path / "transactions.csv.gz")
    results = tmp_path / "handbook.json"
    outcome = CliRunner().invoke(
        app,
        ["handbook", "--data", str(data), "--models", "hist_gb", "--results", str(results),
         "--quiet"],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(results.read_text())
    assert [r["model_kind"] for r in document["results"]] == ["hist_gb"]
    recall = document["results"][0]["metrics"]["recall_at_budget.high_amount"]
    assert "recall at the alert budget by scenario" in outcome.output
    assert "high_amount" in outcome.output
    assert ("caught none at the budget" in outcome.output) is (recall == 0.0)
    computed = document["book_recipe"]["figures"]
    assert set(computed) == set(BOOK_MODELS)
    # Frauds in this file are exactly the amounts over 220: the computed baselines see
    # that; the printed figures are the book's own file's.
    for model, figures in computed.items():
        assert figures["roc_auc"] > 0.99, model
        assert set(figures) == set(FIGURES)
    assert (
        document["published"]["ch3"]["random forest"]["roc_auc"]
        == PUBLISHED_CH3["random forest"][0]
    )


def test_handbook_seeds_simulates_each_seed_and_reports_the_spread(tmp_path: Path) -> None:
    results = tmp_path / "seeds.json"
    arguments = ["handbook-seeds", "--seeds", "100,101", "--no-shared", "--models", "hist_gb",
                 "--customers", "300", "--terminals", "600", "--folder", str(tmp_path / "data"),
                 "--class-weight", "30", "--results", str(results), "--quiet"]  # fmt: skip
    outcome = CliRunner().invoke(app, arguments)
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(results.read_text())
    assert [c["hgb_class_weight"] for c in document["configs"]] == ["30"]
    runs = document["runs"]
    assert [r["label"] for r in runs] == ["seed 100", "seed 101"]
    assert len({Path(r["path"]).name for r in runs}) == 2
    assert runs[0]["ours"]["hist_gb"] != runs[1]["ours"]["hist_gb"]
    for run in runs:
        assert set(run["book_recipe"]) == set(BOOK_MODELS)
        mine, book = run["ours"]["hist_gb"], run["book_recipe"]
        expected = all(mine[f] > b[f] for b in book.values() for f in FIGURES)
        assert run["beats_every_baseline"]["hist_gb"] is expected
    spread = document["spread_over_seeds"]["ours: hist_gb"]["average_precision"]
    values = [r["ours"]["hist_gb"]["average_precision"] for r in runs]
    assert spread["mean"] == pytest.approx(sum(values) / 2)
    assert (spread["min"], spread["max"]) == (min(values), max(values))


def test_handbook_prequential_test_averages_the_four_chapter_5_test_weeks(tmp_path: Path) -> None:
    data = handbook_file(tmp_path / "transactions.csv.gz", days=90)  # to 09-08
    results = tmp_path / "prequential.json"
    outcome = CliRunner().invoke(
        app,
        ["handbook", "--prequential-test", "--data", str(data), "--models", "hist_gb",
         "--results", str(results), "--quiet"],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(results.read_text())
    assert [f["test_start"][:10] for f in document["folds"]] == [
        "2018-08-08", "2018-08-15", "2018-08-22", "2018-08-29",
    ]  # fmt: skip
    ours = document["results"][0]
    assert len(ours["per_fold"]) == 4
    assert ours["metrics"]["average_precision"] == pytest.approx(
        sum(f["average_precision"] for f in ours["per_fold"]) / 4
    )
    book = document["book_recipe"]
    assert len(book["per_fold"]) == 4
    forest = [fold["random forest"]["card_precision_at_100"] for fold in book["per_fold"]]
    assert book["mean"]["random forest"]["card_precision_at_100"] == pytest.approx(sum(forest) / 4)
