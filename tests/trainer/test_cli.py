"""The trainer's command line on small files (no Kafka, no MLflow registry needed)."""

from __future__ import annotations

import json
from pathlib import Path

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
