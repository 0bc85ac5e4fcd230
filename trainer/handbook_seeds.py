"""The handbook benchmark on datasets of its simulator other than the published one.

For each seed the book's simulator (trainer.book_simulator) writes a file in the handbook's
format; on it our models and the book's Chapter 3 baselines (trainer.book_recipe) are fitted
on the same split and tested on the same rows, exactly as `handbook` does on the shared
file. The summary gives each figure's mean and spread over the seeds, and for every seed
whether each of our models beats every computed baseline on all three figures.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.book_recipe import compute_book_rows
from trainer.book_simulator import World, simulate, write
from trainer.handbook import FIGURES, handbook_data
from trainer.models import ModelConfig
from trainer.pipeline import SplitRequest
from trainer.progress import Bars
from trainer.runner import RunOptions, run_training
from trainer.settings import TrainerSettings

Figures = dict[str, float]


@dataclass(frozen=True)
class SeedResult:
    label: str  # "seed 100", or "shared file"
    path: Path
    ours: dict[str, Figures]  # by model kind
    book: dict[str, Figures]  # by the book's model name

    def beats_every_baseline(self, kind: str) -> bool:
        mine = self.ours[kind]
        return all(mine[f] > theirs[f] for theirs in self.book.values() for f in FIGURES)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": str(self.path),
            "ours": self.ours,
            "book_recipe": self.book,
            "beats_every_baseline": {k: self.beats_every_baseline(k) for k in self.ours},
        }


def seed_file(folder: Path, world: World, seed: int) -> Path:
    """The simulator's file for `seed`, written once and then reused: one seed and world
    always give the same rows."""
    name = f"seed-{seed}-{world.customers}c-{world.terminals}t-{world.days}d.csv.gz"
    path = folder / name
    if not path.exists():
        partial = path.with_suffix(".partial.gz")
        write(simulate(world, seed), partial)
        partial.rename(path)
    return path


def evaluate(
    settings: TrainerSettings,
    label: str,
    path: Path,
    configs: list[ModelConfig],
    train_days: int,
    bars: Bars,
) -> SeedResult:
    options = RunOptions(
        data=handbook_data(path, train_days),
        split=SplitRequest(kind="book", book_train_days=train_days),
        configs=configs,
        register=False,
    )
    summaries = run_training(settings, options, bars)
    ours = {s["model_kind"]: {f: float(s["metrics"][f]) for f in FIGURES} for s in summaries}
    return SeedResult(label, path, ours, compute_book_rows(path))


def spread(results: list[SeedResult]) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {figure: {mean, sd, min, max}}} over the results, ours as "ours: kind" and
    the book's as "book: name"."""
    rows: dict[str, list[Figures]] = {}
    for result in results:
        for kind, figures in result.ours.items():
            rows.setdefault(f"ours: {kind}", []).append(figures)
        for name, figures in result.book.items():
            rows.setdefault(f"book: {name}", []).append(figures)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, runs in rows.items():
        out[model] = {}
        for figure in FIGURES:
            values = [r[figure] for r in runs]
            out[model][figure] = {
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
            }
    return out
