"""The tables `handbook-stream` prints: offline beside streaming beside the book's recipe
computed on the same file (trainer.book_recipe), then the counts, the feature comparison and
the time of each step."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_FIGURES = ("roc_auc", "average_precision", "card_precision_at_100")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_report(console: Console, document: dict[str, Any]) -> None:
    figures = Table(title="handbook ch. 3 test set (2018-08-08..14): offline, streaming, book")
    for column in ("path", "ROC AUC", "AP", "CP@100", "test rows", "frauds"):
        figures.add_column(column)
    for path, label in (
        ("offline", "offline: hist_gb, features from the file"),
        ("streaming", "streaming: same version, scores from Kafka"),
    ):
        part = document[path]
        metrics = part["metrics"]
        figures.add_row(
            label,
            *(_fmt(metrics.get(k)) for k in _FIGURES),
            f"{part['test_rows']:,}",
            f"{part['test_frauds']:,}",
        )
    for name, metrics in document["book_recipe"].items():
        row = (_fmt(metrics.get(k)) for k in _FIGURES)
        figures.add_row(f"book recipe, computed: {name}", *row, "", "")
    console.print(figures)

    counts = document["counts"]
    test = document["comparison"]["test_days"]
    whole = document["comparison"]["whole_replay"]
    facts = Table(title="streaming run", show_header=False)
    facts.add_column("what")
    facts.add_column("value")
    dead = counts["dead_lettered"]
    rows = [
        ("transactions replayed", f"{counts['replayed']:,}"),
        ("scored (distinct ids)", f"{counts['scored']:,}"),
        ("dead-lettered", ", ".join(f"{k} {v}" for k, v in dead.items()) or "0"),
        ("duplicate scores", str(counts["duplicate_scores"])),
        ("labels read back", f"{counts['labels_read']:,}"),
        ("partition skew in a scorer batch, hours", _skew(counts["partition_skew_hours"])),
        (
            "test rows with the offline feature vector",
            f"{test['identical_feature_rows']:,} of {test['common_rows']:,}",
        ),
        (
            "all rows with the offline feature vector",
            f"{whole['identical_feature_rows']:,} of {whole['common_rows']:,}",
        ),
        ("features that differ (test rows)", _differing(test["differing_features"])),
        ("features that differ (all rows)", _differing(whole["differing_features"])),
        (
            "event times of differing rows",
            f"{whole['differing_first']} .. {whole['differing_last']}",
        ),
        ("max score gap, identical vectors", f"{test['max_score_gap_identical_features']:.1e}"),
        ("model", f"{document['model_name']} v{document['model_version']}"),
    ]
    for what, value in rows:
        facts.add_row(what, value)
    console.print(facts)

    timing = Table(title="wall time")
    timing.add_column("step")
    timing.add_column("seconds", justify="right")
    for step, seconds in document["seconds"].items():
        timing.add_row(step, f"{seconds:.1f}")
    timing.add_row("total", f"{document['total_seconds']:.1f}")
    console.print(timing)
    console.print(document["machine"])


def _skew(skew: dict[str, float]) -> str:
    if not skew.get("batches"):
        return "-"
    return f"median {skew['median']}, p90 {skew['p90']}, max {skew['max']} ({skew['batches']:,.0f} batches)"


def _differing(per_feature: dict[str, dict[str, float]]) -> str:
    if not per_feature:
        return "none"
    return "; ".join(
        f"{name}: {d['rows']:,.0f} rows ({d['lower_online']:,.0f} lower online, "
        f"mean offline - online {d['mean_offline_minus_online']:+.3g})"
        for name, d in sorted(per_feature.items(), key=lambda item: -item[1]["rows"])
    )
