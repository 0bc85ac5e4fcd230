"""Throughput of the compiled tree evaluator against stock sklearn, on one core.

    python -m bench.treeeval [--seconds 0.5] [--pin CPU] [--json PATH]

Trains models shaped like ours on random data (33 features, a few mostly-missing columns,
heavy-tailed amounts and counts), then times FraudModel.score (sklearn) and
CompiledModel.score with the numba and the numpy backend at several batch sizes. Each
cell is the best of a few timed repetitions, in rows per second; the whole call is timed
(imputation, traversal, calibration), as the scorer would pay it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from threadpoolctl import threadpool_limits

from fraudcore.features import FEATURE_NAMES
from fraudcore.model import Component, FraudModel
from scorer.treeeval import Backend, compile_model

BATCH_SIZES = (1, 100, 1000, 10000)
TRAIN_ROWS = 40_000
# Columns that are missing for most rows (no previous transaction, no location, ...).
SPARSE_COLUMNS = (13, 17, 18, 21, 22)

app = typer.Typer(add_completion=False)


def synthetic_features(rows: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.lognormal(mean=2.0, sigma=1.5, size=(rows, len(FEATURE_NAMES)))
    x[:, 1] = rng.integers(0, 24, rows)
    x[:, 2:4] = rng.integers(0, 2, (rows, 2))
    x[:, 4:10] = rng.poisson(3.0, (rows, 6))
    for column in SPARSE_COLUMNS:
        x[rng.random(rows) < 0.6, column] = np.nan
    x[rng.random(x.shape) < 0.02] = np.nan
    return x


def synthetic_labels(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    signal = np.log1p(np.nan_to_num(x[:, 0])) - 3.0 + 0.3 * np.nan_to_num(x[:, 4])
    return (rng.random(x.shape[0]) < 1 / (1 + np.exp(-signal))).astype(np.int64)


def fraud_model(components: list[Component], x: np.ndarray) -> FraudModel:
    medians = np.nanmedian(x, axis=0)
    imputation = {n: float(m) for n, m in zip(FEATURE_NAMES, medians, strict=True)}
    return FraudModel(FEATURE_NAMES, imputation, 0.5, components)


def build_models(rng: np.random.Generator) -> dict[str, FraudModel]:
    x = synthetic_features(TRAIN_ROWS, rng)
    y = synthetic_labels(x, rng)
    probe = fraud_model([], x)
    prepared = probe.prepare(x)
    models: dict[str, FraudModel] = {}
    forests = {}
    for max_samples in (256, 2048):
        forest = IsolationForest(n_estimators=200, max_samples=max_samples, random_state=0)
        forests[max_samples] = forest.fit(prepared)
        name = f"IF 200 trees, max_samples {max_samples}"
        models[name] = fraud_model([Component("isolation_forest", forest)], x)
    hgb = HistGradientBoostingClassifier(
        max_iter=300, max_leaf_nodes=31, early_stopping=False, random_state=0
    ).fit(prepared, y)
    models["HGB 300 iterations, 31 leaves"] = fraud_model(
        [Component("hist_gradient_boosting", hgb)], x
    )
    calibration = np.quantile(-forests[256].score_samples(prepared[:5000]), np.linspace(0, 1, 101))
    models["ensemble IF256 + HGB, calibrated"] = fraud_model(
        [
            Component("isolation_forest", forests[256], 1.0, calibration),
            Component("hist_gradient_boosting", hgb, 2.0),
        ],
        x,
    )
    return models


def rows_per_second(
    score: Callable[[np.ndarray], object],
    batch: np.ndarray,
    seconds: float,
    clock: Callable[[], float],
) -> float:
    score(batch)
    best = float("inf")
    deadline = clock() + seconds
    calls = 0
    while calls < 3 or clock() < deadline:
        began = clock()
        score(batch)
        best = min(best, clock() - began)
        calls += 1
    return batch.shape[0] / best


@app.command()
def main(
    seconds: Annotated[float, typer.Option(help="time budget per cell")] = 0.5,
    pin: Annotated[int | None, typer.Option(help="run on this CPU only")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write results")] = None,
    sklearn_max_batch: Annotated[int, typer.Option(help="skip sklearn above this")] = 10000,
    wall: Annotated[
        bool, typer.Option(help="time wall clock instead of this thread's CPU time")
    ] = False,
) -> None:
    """Rows/s of sklearn vs the compiled evaluator (numba, numpy) at batch sizes 1..10k."""
    # On a shared machine this thread's CPU time is the stable measure of one core's
    # work; wall clock adds whatever the other processes take from the core.
    console = Console()
    clock = time.perf_counter if wall else time.thread_time
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    rng = np.random.default_rng(7)
    with threadpool_limits(1):  # one core for everyone, sklearn's OpenMP included
        began = time.perf_counter()
        models = build_models(rng)
        console.print(f"trained {len(models)} models in {time.perf_counter() - began:.1f}s")
        rows = synthetic_features(max(BATCH_SIZES), rng)
        results: list[dict[str, object]] = []
        for name, model in models.items():
            backends: dict[str, Callable[[np.ndarray], object]] = {"sklearn": model.score}
            backend: Backend
            for backend in ("numba", "numpy"):
                compiled = compile_model(model, backend=backend)
                got, want = compiled.score(rows[:2000]), model.score(rows[:2000])
                diff = np.abs(got - want).max()
                console.print(f"{name} ({backend}): max |diff| vs sklearn = {diff:.2e}")
                backends[backend] = compiled.score
            for path, score in backends.items():
                for size in BATCH_SIZES:
                    if path == "sklearn" and size > sklearn_max_batch:
                        continue
                    rate = rows_per_second(score, rows[:size], seconds, clock)
                    results.append({"model": name, "path": path, "batch": size, "rows_s": rate})
    table = Table(
        title=f"rows/s on one core ({'wall' if wall else 'CPU'} time, best of repeated calls)"
    )
    table.add_column("model")
    table.add_column("path")
    for size in BATCH_SIZES:
        table.add_column(f"batch {size}", justify="right")
    for name in models:
        for path in ("sklearn", "numba", "numpy"):
            cells = {
                r["batch"]: r["rows_s"] for r in results if (r["model"], r["path"]) == (name, path)
            }
            table.add_row(
                name, path, *(f"{cells[s]:,.0f}" if s in cells else "-" for s in BATCH_SIZES)
            )
    console.print(table)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    console.print(f"load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} CPUs")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    app()
