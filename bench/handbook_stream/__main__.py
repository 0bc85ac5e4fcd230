"""python -m bench.handbook_stream: the handbook benchmark both ways, offline and through
Kafka with the real producer and scorer (fresh topics, model and feature state), judged
on the same split. Needs the stack (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, MLFLOW_TRACKING_URI
from the environment or the root .env)."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench.handbook_stream.report import print_report
from bench.handbook_stream.run import StreamOptions, StreamSettings, run_stream_benchmark
from fraudcore.logs import setup_logging
from fraudcore.settings import REPO_ROOT, load_settings
from trainer.book_recipe import compute_book_rows
from trainer.handbook import HANDBOOK_FILE, handbook_data
from trainer.models import ModelConfig
from trainer.pipeline import SplitRequest
from trainer.progress import Bars

app = typer.Typer(add_completion=False, help=__doc__)
console = Console()


@app.command()
def run(
    data: Annotated[Path, typer.Option(help="The handbook's transactions.csv.gz.")] = HANDBOOK_FILE,
    seed: Annotated[int | None, typer.Option(help="Random seed (default TRAINER_SEED).")] = None,
    train_days: Annotated[
        int, typer.Option(min=7, help="Training days ending 2018-07-31 (the book: 7).")
    ] = 7,
    speed: Annotated[
        float, typer.Option(help="Replay speed passed to the producer (0: as fast as possible).")
    ] = 0.0,
    replay_timeout: Annotated[float, typer.Option(help="Longest replay, seconds.")] = 1800.0,
    drain_timeout: Annotated[
        float, typer.Option(help="Longest wait for the last scores after the replay, seconds.")
    ] = 900.0,
    results: Annotated[Path, typer.Option(help="Where the JSON of the figures goes.")] = (
        REPO_ROOT / ".run" / "handbook-stream" / "handbook-stream.json"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Fit hist_gb on the book's split, register it as champion under a fresh name, replay
    the same window through the producer and the scorer, and compare the figures."""
    setup_logging("bench")
    settings = load_settings(StreamSettings, model_name=f"handbook-stream-{uuid.uuid4().hex[:8]}")
    options = StreamOptions(
        data=handbook_data(data, train_days),
        split=SplitRequest(kind="book", book_train_days=train_days),
        config=ModelConfig(
            kind="hist_gb",
            seed=settings.trainer_seed if seed is None else seed,
            alert_budget=settings.trainer_alert_budget,
        ),
        speed=speed,
        replay_timeout_s=replay_timeout,
        drain_timeout_s=drain_timeout,
    )
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    document = run_stream_benchmark(settings, options, Bars(enabled=not quiet))
    load = os.getloadavg()
    document = {
        "command": "python -m bench.handbook_stream " + " ".join(sys.argv[1:]),
        "machine": (
            f"{os.cpu_count()} cores; load average (1/5/15 min) at the start "
            f"{load_at_start[0]:.1f}/{load_at_start[1]:.1f}/{load_at_start[2]:.1f}, at the end "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, 1-min peak {document['peak_load_1m']:.1f}"
        ),
        "total_seconds": round(time.perf_counter() - started, 1),
        **document,
        "book_recipe": compute_book_rows(data),
    }
    print_report(console, document)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(document, indent=2, default=str))
    console.print(f"results written to {results}")


if __name__ == "__main__":
    sys.exit(app())
