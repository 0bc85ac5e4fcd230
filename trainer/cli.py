"""`python -m trainer`: train, handbook, handbook-seeds, simulate, bootstrap, promote."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.table import Table

from fraudcore.logs import kv, setup_logging
from fraudcore.settings import REPO_ROOT, load_settings
from trainer import book_simulator
from trainer.book_simulator import World
from trainer.handbook import (
    FIGURES,
    HANDBOOK_FILE,
    PUBLISHED_CH3,
    PUBLISHED_CH5,
    as_figures,
    handbook_data,
    handbook_folds_data,
)
from trainer.holdout import (
    BOOK_FEED_SINCE,
    BOOK_PREQUENTIAL_TEST,
    BOOK_PREQUENTIAL_VALIDATION,
    Holdout,
    book_holdout,
    book_prequential_holdouts,
)
from trainer.models import ModelConfig, NeedsLabelsError
from trainer.pipeline import DataRequest, SplitRequest
from trainer.progress import Bars
from trainer.runner import RunOptions, run_folds, run_training
from trainer.settings import ModelKind, TrainerSettings
from trainer.timeutil import parse_duration, parse_utc

logger = logging.getLogger(__name__)
console = Console()
app = typer.Typer(
    help="Train, evaluate, register and promote fraud models (see trainer/README.md).",
    no_args_is_help=True,
    add_completion=False,
)

ModelOpt = Annotated[
    ModelKind | None, typer.Option("--model", help="isolation_forest | hist_gb | ensemble")
]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed (default TRAINER_SEED).")]
BudgetOpt = Annotated[
    float | None, typer.Option(help="Share of transactions that alert (default 0.005).")
]
NameOpt = Annotated[str | None, typer.Option("--model-name", help="Registered model name.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
LabelDelayOpt = Annotated[
    str | None,
    typer.Option(help="Longest delay of a label (default TRAINER_LABEL_DELAY), e.g. 8d."),
]


def _given(**options: Any) -> dict[str, Any]:
    """The command-line options given (None: not given), as settings overrides."""
    return {k: v for k, v in options.items() if v is not None}


# HistGradientBoosting settings a command can override (None: ModelConfig's default).
MaxIterOpt = Annotated[int | None, typer.Option(help="HistGradientBoosting iterations.")]
LearningRateOpt = Annotated[float | None, typer.Option(help="HistGradientBoosting rate.")]
MaxLeafNodesOpt = Annotated[int | None, typer.Option(help="HistGradientBoosting leaves.")]
MinSamplesLeafOpt = Annotated[int | None, typer.Option(help="HGB min samples per leaf.")]
ClassWeightOpt = Annotated[
    str | None, typer.Option(help="HGB class weight: balanced, none or a fraud weight.")
]
MaxFeaturesOpt = Annotated[float | None, typer.Option(help="HGB share of features per split.")]


def _settings(**overrides: Any) -> TrainerSettings:
    return load_settings(TrainerSettings, **_given(**overrides))


def _config(
    settings: TrainerSettings,
    kind: ModelKind | None,
    seed: int | None,
    budget: float | None,
    tuning: dict[str, Any],
) -> ModelConfig:
    return ModelConfig(
        kind=kind or settings.trainer_model,
        seed=settings.trainer_seed if seed is None else seed,
        alert_budget=settings.trainer_alert_budget if budget is None else budget,
        **{k: v for k, v in tuning.items() if v is not None},
    )


def _time(value: str | None) -> float | None:
    return None if value is None else parse_utc(value)


@app.command()
def train(
    from_file: Annotated[
        Path | None, typer.Option(help="CSV/JSONL file (.gz ok) instead of the Kafka topics.")
    ] = None,
    preset: Annotated[str, typer.Option(help="auto | generic | handbook")] = "auto",
    since: Annotated[str | None, typer.Option(help="Event time from (UTC, ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Event time until, exclusive.")] = None,
    split: Annotated[str, typer.Option(help="auto | book (the handbook's ch. 3 split)")] = "auto",
    test_fraction: Annotated[float, typer.Option(help="Share of the span tested.")] = 0.25,
    gap: Annotated[str | None, typer.Option(help="Train/test gap (default: label delay).")] = None,
    warmup: Annotated[
        str | None,
        typer.Option(help="Leading span only warming features (default TRAINER_WARMUP, 30d)."),
    ] = None,
    label_delay: Annotated[
        str | None, typer.Option(help="Label delay for files without one (e.g. 7d).")
    ] = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    alert_budget: BudgetOpt = None,
    model_name: NameOpt = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment.")] = None,
    register: Annotated[bool, typer.Option(help="Log to MLflow, register, run the gate.")] = True,
    results: Annotated[Path | None, typer.Option(help="Also write the figures as JSON.")] = None,
    trees: Annotated[int | None, typer.Option(help="IsolationForest trees.")] = None,
    max_samples: Annotated[int | None, typer.Option(help="IsolationForest max_samples.")] = None,
    max_iter: MaxIterOpt = None,
    learning_rate: LearningRateOpt = None,
    max_leaf_nodes: MaxLeafNodesOpt = None,
    min_samples_leaf: MinSamplesLeafOpt = None,
    class_weight: ClassWeightOpt = None,
    max_features: MaxFeaturesOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Build features (Kafka topics or a file), train, evaluate on a time holdout, register."""
    setup_logging("trainer")
    settings = _settings(model_name=model_name, trainer_experiment=experiment)
    delay = parse_duration(label_delay or settings.trainer_label_delay)
    book = split == "book"
    if split not in ("auto", "book"):
        raise typer.BadParameter("auto or book", param_hint="--split")
    if preset not in ("auto", "generic", "handbook"):
        raise typer.BadParameter("auto, generic or handbook", param_hint="--preset")
    data = DataRequest(
        path=from_file,
        preset=preset,  # type: ignore[arg-type]
        since=_time(since) if since or not book else parse_utc(BOOK_FEED_SINCE),
        until=_time(until) if until or not book else book_holdout().test_end,
        label_delay_s=delay,
    )
    tuning = dict(
        if_trees=trees,
        if_max_samples=max_samples,
        hgb_max_iter=max_iter,
        hgb_learning_rate=learning_rate,
        hgb_max_leaf_nodes=max_leaf_nodes,
        hgb_min_samples_leaf=min_samples_leaf,
        hgb_class_weight=class_weight,
        hgb_max_features=max_features,
    )
    options = RunOptions(
        data=data,
        split=SplitRequest(
            kind="book" if book else "auto",
            test_fraction=test_fraction,
            gap_s=None if gap is None else parse_duration(gap),
            warmup_s=parse_duration(warmup or settings.trainer_warmup),
        ),
        configs=[_config(settings, model, seed, alert_budget, tuning)],
        register=register,
    )
    _run(settings, options, results, quiet)


def _run(
    settings: TrainerSettings, options: RunOptions, results: Path | None, quiet: bool
) -> list[dict[str, Any]]:
    try:
        summaries = run_training(settings, options, Bars(enabled=not quiet))
    except NeedsLabelsError as exc:
        console.print(f"[red]cannot train:[/red] {exc}")
        raise typer.Exit(2) from None
    except ValueError as exc:
        console.print(f"[red]cannot train:[/red] {exc}")
        raise typer.Exit(2) from None
    _print_summaries(summaries)
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(summaries, indent=2, default=str))
        console.print(f"results written to {results}")
    return summaries


def _print_summaries(summaries: list[dict[str, Any]]) -> None:
    table = Table(title="holdout figures")
    for column in ("model", "ROC AUC", "AP", "CP@100", "prec@budget", "recall@budget", "alias"):
        table.add_column(column)
    for s in summaries:
        m = s["metrics"]
        table.add_row(
            s["model_kind"],
            *(
                _fmt(m.get(k))
                for k in (
                    "roc_auc",
                    "average_precision",
                    "card_precision_at_100",
                    "precision_at_budget",
                    "recall_at_budget",
                )
            ),
            s.get("alias") or "-",
        )
    console.print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command()
def handbook(
    data: Annotated[Path, typer.Option(help="The handbook's transactions.csv.gz.")] = HANDBOOK_FILE,
    models: Annotated[
        str, typer.Option(help="Comma-separated model kinds to fit on the same features.")
    ] = "isolation_forest,hist_gb,ensemble",
    seed: SeedOpt = None,
    max_iter: MaxIterOpt = None,
    learning_rate: LearningRateOpt = None,
    max_leaf_nodes: MaxLeafNodesOpt = None,
    min_samples_leaf: MinSamplesLeafOpt = None,
    class_weight: ClassWeightOpt = None,
    max_features: MaxFeaturesOpt = None,
    results: Annotated[Path, typer.Option(help="Where the JSON of the figures goes.")] = (
        REPO_ROOT / ".run" / "trainer" / "handbook.json"
    ),
    train_days: Annotated[
        int,
        typer.Option(
            min=7,
            help="Training days ending 2018-07-31 (the book: 7); the test set stays the book's.",
        ),
    ] = 7,
    validation: Annotated[
        bool,
        typer.Option(
            "--validation",
            help="Evaluate on the book's ch. 5 prequential validation folds (test weeks "
            "07-04 to 07-25) instead of its test set: the place to compare hyperparameters.",
        ),
    ] = False,
    book: Annotated[
        bool,
        typer.Option(
            "--book/--no-book",
            help="Also compute the book's Chapter 3 baselines (its features, split and "
            "models: trainer/book_recipe.py) on the same file.",
        ),
    ] = True,
    prequential_test: Annotated[
        bool,
        typer.Option(
            "--prequential-test",
            help="Instead of the ch. 3 test week, the mean over the book's ch. 5 prequential "
            "test folds (test weeks 08-08, 08-15, 08-22, 08-29), ours and the book's recipe.",
        ),
    ] = False,
    book_only: Annotated[
        bool,
        typer.Option(
            "--book-only",
            help="Only the book's computed baselines beside its published figures.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """The handbook benchmark: the book's ch. 3 split, our figures beside the book's
    baselines computed on the same data (and the book's published figures)."""
    setup_logging("trainer")
    settings = _settings()
    kinds = _kinds(models)
    tuning = _tuning(locals())
    if prequential_test:
        configs = [_config(settings, k, seed, None, tuning) for k in kinds]
        _handbook_prequential(data, configs, train_days, results, quiet)
        return
    if validation:
        if book_only:
            raise typer.BadParameter("not with --validation", param_hint="--book-only")
        _handbook_validation(
            data, [_config(settings, k, seed, None, tuning) for k in kinds], train_days, quiet
        )
        return
    started = time.perf_counter()
    summaries: list[dict[str, Any]] = []
    if not book_only:
        options = RunOptions(
            data=handbook_data(data, train_days),
            split=SplitRequest(kind="book", book_train_days=train_days),
            configs=[_config(settings, k, seed, None, tuning) for k in kinds],
            register=False,
        )
        summaries = _run(settings, options, None, quiet)
    recipe = _book_recipe(data) if book or book_only else None
    table = Table(title="handbook ch. 3 test set (2018-08-08..14): ours and the book's")
    for column in ("model", "ROC AUC", "AP", "CP@100"):
        table.add_column(column)
    for s in summaries:
        m = s["metrics"]
        table.add_row(f"ours: {s['model_kind']}", *(_fmt(m.get(k)) for k in FIGURES))
    if recipe is not None:
        for name, m in recipe["figures"].items():
            table.add_row(f"book recipe: {name} (computed)", *(_fmt(m.get(k)) for k in FIGURES))
    for label, published in (
        ("ch. 3", PUBLISHED_CH3),
        ("ch. 5, 4 other test weeks", PUBLISHED_CH5),
    ):
        for name, figures in published.items():
            table.add_row(f"published: {name} ({label})", *(f"{v:.3f}" for v in figures))
    console.print(table)
    _print_scenario_recall(summaries)
    document = {
        "command": "python -m trainer " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}",
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": summaries,
        "book_recipe": recipe,
        "published": {"ch3": as_figures(PUBLISHED_CH3), "ch5": as_figures(PUBLISHED_CH5)},
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(document, indent=2, default=str))
    console.print(f"results written to {results}")


@app.command()
def simulate(
    seed: Annotated[int, typer.Option(help="The simulator's seed (0: the book's own file).")],
    out: Annotated[Path, typer.Option(help="The CSV file to write (.gz: compressed).")],
    customers: Annotated[int, typer.Option(min=1)] = World.customers,
    terminals: Annotated[int, typer.Option(min=1)] = World.terminals,
    days: Annotated[int, typer.Option(min=2)] = World.days,
) -> None:
    """Write a dataset of the handbook's simulator (trainer/book_simulator.py) for a seed."""
    setup_logging("trainer")
    world = World(customers=customers, terminals=terminals, days=days)
    frame = book_simulator.simulate(world, seed)
    book_simulator.write(frame, out)
    console.print(f"{len(frame):,} transactions, {int(frame['TX_FRAUD'].sum()):,} frauds: {out}")


@app.command("handbook-seeds")
def handbook_seeds(
    seeds: Annotated[
        str, typer.Option(help="Comma-separated simulator seeds (100 and above: ours).")
    ] = "100,101,102",
    models: Annotated[str, typer.Option(help="Comma-separated model kinds.")] = "hist_gb",
    shared: Annotated[
        bool, typer.Option("--shared/--no-shared", help="Also the shared handbook file.")
    ] = True,
    data: Annotated[Path, typer.Option(help="The shared handbook file.")] = HANDBOOK_FILE,
    folder: Annotated[Path, typer.Option(help="Where the simulated files are kept.")] = (
        REPO_ROOT / ".run" / "handbook-seeds"
    ),
    customers: Annotated[int, typer.Option(min=1)] = World.customers,
    terminals: Annotated[int, typer.Option(min=1)] = World.terminals,
    train_days: Annotated[int, typer.Option(min=7)] = 7,
    seed: SeedOpt = None,
    max_iter: MaxIterOpt = None,
    learning_rate: LearningRateOpt = None,
    max_leaf_nodes: MaxLeafNodesOpt = None,
    min_samples_leaf: MinSamplesLeafOpt = None,
    class_weight: ClassWeightOpt = None,
    max_features: MaxFeaturesOpt = None,
    results: Annotated[Path, typer.Option(help="Where the JSON of the figures goes.")] = (
        REPO_ROOT / ".run" / "trainer" / "handbook-seeds.json"
    ),
    quiet: QuietOpt = False,
) -> None:
    """The handbook benchmark, ours beside the book's computed baselines, on fresh datasets
    of the book's simulator: per seed, and the mean and spread over them."""
    from trainer import handbook_seeds as seeded

    setup_logging("trainer")
    settings = _settings()
    tuning = _tuning(locals())
    configs = [_config(settings, k, seed, None, tuning) for k in _kinds(models)]
    world = World(customers=customers, terminals=terminals)
    started = time.perf_counter()
    bars = Bars(enabled=not quiet)
    runs = []
    if shared:
        runs.append(seeded.evaluate(settings, "shared file", data, configs, train_days, bars))
    for number in _seeds(seeds):
        path = seeded.seed_file(folder, world, number)
        runs.append(seeded.evaluate(settings, f"seed {number}", path, configs, train_days, bars))
    table = Table(title="handbook ch. 3 split on datasets of the book's simulator")
    for column in ("data", "model", "ROC AUC", "AP", "CP@100", "beats every baseline"):
        table.add_column(column)
    for run in runs:
        for kind, figures in run.ours.items():
            verdict = "yes" if run.beats_every_baseline(kind) else "NO"
            table.add_row(run.label, f"ours: {kind}", *(_fmt(figures[f]) for f in FIGURES), verdict)
        for name, figures in run.book.items():
            table.add_row(run.label, f"book: {name}", *(_fmt(figures[f]) for f in FIGURES), "")
    console.print(table)
    seeded_only = [r for r in runs if r.label != "shared file"]
    spread = seeded.spread(seeded_only) if seeded_only else {}
    summary = Table(title=f"over the {len(seeded_only)} seeds: mean ± sd (min-max)")
    for column in ("model", "ROC AUC", "AP", "CP@100"):
        summary.add_column(column)
    for model, stats in spread.items():
        summary.add_row(
            model,
            *(
                f"{stats[f]['mean']:.3f} ± {stats[f]['sd']:.3f} "
                f"({stats[f]['min']:.3f}-{stats[f]['max']:.3f})"
                for f in FIGURES
            ),
        )
    console.print(summary)
    document = {
        "command": "python -m trainer " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}",
        "total_seconds": round(time.perf_counter() - started, 1),
        "configs": [c.params() for c in configs],
        "runs": [r.as_json() for r in runs],
        "spread_over_seeds": spread,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(document, indent=2, default=str))
    console.print(f"results written to {results}")


def _seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"not a list of integers: {text!r}", param_hint="--seeds"
        ) from None


def _print_scenario_recall(summaries: list[dict[str, Any]]) -> None:
    """Recall at the alert budget per fraud scenario for each of our models; a scenario
    a model never catches at the budget is named below the table."""
    prefix = "recall_at_budget."
    scenarios = sorted(
        {k[len(prefix) :] for s in summaries for k in s["metrics"] if k.startswith(prefix)}
    )
    if not scenarios:
        return
    table = Table(title="recall at the alert budget by scenario")
    for column in ("model", "all", *scenarios):
        table.add_column(column)
    missed = []
    for s in summaries:
        m = s["metrics"]
        table.add_row(
            f"ours: {s['model_kind']}",
            _fmt(m.get("recall_at_budget")),
            *(_fmt(m.get(prefix + name)) for name in scenarios),
        )
        missed += [f"{s['model_kind']}: {n}" for n in scenarios if m.get(prefix + n) == 0.0]
    console.print(table)
    if missed:
        console.print("[red]caught none at the budget:[/red] " + ", ".join(missed))


def _book_recipe(data: Path) -> dict[str, Any]:
    """The book's Chapter 3 baselines computed on `data`, always on the book's own split
    (7 training days from 2018-07-25, whatever --train-days says)."""
    from trainer.book_recipe import BookSplit, compute_book_rows

    split = BookSplit()
    started = time.perf_counter()
    with console.status("book recipe: features, split, 4 models"):
        figures = compute_book_rows(data, split)
    return {
        "split": {
            "train": f"{split.train_start.date()} + {split.train_days} days",
            "delay_days": split.delay_days,
            "test": f"{split.test_start.date()} + {split.test_days} days",
        },
        "seconds": round(time.perf_counter() - started, 1),
        "figures": figures,
    }


def _fold_summaries(
    data: Path, holdouts: list[Holdout], configs: list[ModelConfig], quiet: bool
) -> list[dict[str, Any]]:
    """Each config's mean figures over the handbook folds, from one feature table."""
    options = RunOptions(
        data=handbook_folds_data(data, holdouts),
        split=SplitRequest(kind="book"),
        configs=configs,
        register=False,
    )
    return run_folds(options, holdouts, Bars(enabled=not quiet))


def _handbook_prequential(
    data: Path, configs: list[ModelConfig], train_days: int, results: Path, quiet: bool
) -> None:
    """Ours with `train_days`; the book's recipe as the book runs it, 7 days."""
    import numpy as np
    import pandas as pd

    from trainer.book_recipe import BookSplit, compute_book_rows

    started = time.perf_counter()
    holdouts = book_prequential_holdouts(BOOK_PREQUENTIAL_TEST, train_days=train_days)
    summaries = _fold_summaries(data, holdouts, configs, quiet)
    book_folds = [
        compute_book_rows(data, BookSplit(train_start=pd.Timestamp(h.known_from, unit="s")))
        for h in holdouts
    ]
    book_mean = {
        name: {f: float(np.mean([fold[name][f] for fold in book_folds])) for f in FIGURES}
        for name in book_folds[0]
    }
    table = Table(title="handbook ch. 5 prequential test folds (mean of 4 test weeks)")
    for column in ("model", "ROC AUC", "AP", "CP@100"):
        table.add_column(column)
    for s in summaries:
        table.add_row(f"ours: {s['model_kind']}", *(_fmt(s["metrics"].get(f)) for f in FIGURES))
    for name, figures in book_mean.items():
        table.add_row(f"book recipe: {name} (computed)", *(_fmt(figures[f]) for f in FIGURES))
    for name, values in PUBLISHED_CH5.items():
        table.add_row(f"published: {name} (ch. 5)", *(f"{v:.3f}" for v in values))
    console.print(table)
    document = {
        "command": "python -m trainer " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}",
        "total_seconds": round(time.perf_counter() - started, 1),
        "folds": [h.describe() for h in holdouts],
        "results": summaries,
        "book_recipe": {"mean": book_mean, "per_fold": book_folds},
        "published": {"ch5": as_figures(PUBLISHED_CH5)},
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(document, indent=2, default=str))
    console.print(f"results written to {results}")


def _kinds(text: str) -> list[ModelKind]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in get_args(ModelKind):
            raise typer.BadParameter(f"unknown model kind {kind!r}", param_hint="--models")
    return kinds  # type: ignore[return-value]


def _tuning(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "hgb_max_iter": options["max_iter"],
        "hgb_learning_rate": options["learning_rate"],
        "hgb_max_leaf_nodes": options["max_leaf_nodes"],
        "hgb_min_samples_leaf": options["min_samples_leaf"],
        "hgb_class_weight": options["class_weight"],
        "hgb_max_features": options["max_features"],
    }


def _handbook_validation(
    data: Path, configs: list[ModelConfig], train_days: int, quiet: bool
) -> None:
    holdouts = book_prequential_holdouts(BOOK_PREQUENTIAL_VALIDATION, train_days=train_days)
    summaries = _fold_summaries(data, holdouts, configs, quiet)
    table = Table(title="handbook ch. 5 validation folds (mean of 4; nothing from 08-01 read)")
    for column in ("model", "params", "ROC AUC", "AP", "CP@100"):
        table.add_column(column)
    for s in summaries:
        m = s["metrics"]
        params = " ".join(
            f"{k.removeprefix('hgb_')}={v}" for k, v in s["params"].items() if k.startswith("hgb_")
        )
        table.add_row(
            s["model_kind"],
            params,
            _fmt(m.get("roc_auc")),
            _fmt(m.get("average_precision")),
            _fmt(m.get("card_precision_at_100")),
        )
    console.print(table)


@app.command()
def bootstrap(
    model: ModelOpt = None,
    model_name: NameOpt = None,
    min_transactions: Annotated[
        int | None, typer.Option(help="Wait for this many transactions on the topic.")
    ] = None,
    wait: Annotated[float | None, typer.Option(help="Longest wait for them, seconds.")] = None,
    label_delay: LabelDelayOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """First model: if the registry has no champion, train one from the topics (bounded)."""
    from trainer.bootstrap import run_bootstrap

    setup_logging("trainer")
    settings = _settings(
        model_name=model_name,
        trainer_bootstrap_min_transactions=min_transactions,
        trainer_bootstrap_wait_s=wait,
        trainer_label_delay=label_delay,
    )
    code = run_bootstrap(settings, model, Bars(enabled=not quiet))
    raise typer.Exit(code)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The model version to make champion.")],
    model_name: NameOpt = None,
) -> None:
    """Point the champion alias at a version by hand (e.g. an unlabelled challenger)."""
    from mlflow.tracking import MlflowClient

    setup_logging("trainer")
    settings = _settings(model_name=model_name)
    uri = settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.get_model_version(settings.model_name, version)  # fails clearly if absent
    client.set_registered_model_alias(settings.model_name, "champion", version)
    client.set_model_version_tag(settings.model_name, version, "gate.decision", "champion")
    client.set_model_version_tag(settings.model_name, version, "gate.reason", "manual")
    logger.info("champion set by hand %s", kv(model=settings.model_name, version=version))
    console.print(f"{settings.model_name} version {version} is now champion")


@app.command()
def schedule(
    every: Annotated[
        str | None, typer.Option(help="Time between retrains (default TRAINER_RETRAIN_EVERY, 1d).")
    ] = None,
    model: ModelOpt = None,
    model_name: NameOpt = None,
    label_delay: LabelDelayOpt = None,
    max_runs: Annotated[
        int | None, typer.Option(help="Stop after this many retrains (default: never).")
    ] = None,
) -> None:
    """The retrain service: train from the topics every period, gate, promote; metrics."""
    from trainer.schedule import run_schedule
    from trainer.settings import ScheduleSettings

    setup_logging("trainer")
    settings = load_settings(
        ScheduleSettings,
        **_given(
            trainer_retrain_every=every,
            trainer_model=model,
            model_name=model_name,
            trainer_label_delay=label_delay,
        ),
    )
    raise typer.Exit(run_schedule(settings, Bars(enabled=False), max_runs))
