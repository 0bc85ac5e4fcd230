"""`python -m producer`: simulate card traffic with labelled fraud, or replay a file, into
Kafka. Addresses, ports and topics come from the environment / .env; flags shape the run."""

from __future__ import annotations

import logging
import signal
import threading
import time
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from fraudcore.datasets import handbook_path
from fraudcore.logs import kv, setup_logging
from fraudcore.settings import load_settings
from producer import metrics
from producer.app import Prepared, RunOptions, execute, prepare_source
from producer.kafka_output import KafkaUnavailable
from producer.population import MIN_MERCHANTS, PopulationConfig
from producer.replay import configure, mapping_from_flags
from producer.runner import RunLimits, RunSummary
from producer.scenarios import SCENARIOS
from producer.settings import ProducerSettings
from producer.simulator import TrafficConfig
from producer.timeparse import parse_duration, parse_instant

logger = logging.getLogger(__name__)
console = Console(stderr=True)

EXIT_OK, EXIT_DELIVERY, EXIT_USAGE, EXIT_KAFKA = 0, 1, 2, 3

SIM, PACE, LABELS, REPLAY, OPS = "Simulation", "Pacing", "Labels", "Replay", "Kafka and metrics"


class PresetName(StrEnum):
    handbook = "handbook"


class FileFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class LabelSource(StrEnum):
    chargeback = "chargeback"
    simulator = "simulator"
    analyst = "analyst"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(
    help=(
        "Publish card transactions to Kafka (topic TOPIC_TRANSACTIONS, key user_id) and their "
        "ground truth, late, to TOPIC_LABELS (key transaction_id).\n\n"
        "Without --from-file: a simulated population with injected, labelled fraud "
        f"({', '.join(SCENARIOS)}). With --from-file: a replay of a CSV/JSONL file; rows "
        "that cannot become valid transactions go to TOPIC_TRANSACTIONS_DLQ.\n\n"
        "A label is published once event time passes its available_at (transaction time + "
        "--label-delay). Event time follows --speed: 1 = real time, 3600 = an hour per "
        "second, 0 = as fast as possible; a simulation never runs ahead of the wall clock."
    )
)
def main_command(
    users: Annotated[
        int, typer.Option(help="Card holders.", rich_help_panel=SIM)
    ] = PopulationConfig.users,
    merchants: Annotated[
        int, typer.Option(help=f"Merchants (at least {MIN_MERCHANTS}).", rich_help_panel=SIM)
    ] = PopulationConfig.merchants,
    seed: Annotated[
        int,
        typer.Option(help="Seed: same seed, sizes and --start, same data.", rich_help_panel=SIM),
    ] = PopulationConfig.seed,
    fraud_rate: Annotated[
        float,
        typer.Option(
            help="Expected share of fraudulent transactions (0-0.5).", rich_help_panel=SIM
        ),
    ] = TrafficConfig.fraud_rate,
    scenarios: Annotated[
        str,
        typer.Option(help="Comma-separated fraud scenarios to inject.", rich_help_panel=SIM),
    ] = ",".join(SCENARIOS),
    tx_per_user_day: Annotated[
        float,
        typer.Option(help="Mean transactions per card holder per day.", rich_help_panel=SIM),
    ] = PopulationConfig.tx_per_user_day,
    id_prefix: Annotated[
        str, typer.Option(help="Prefix of user, merchant and transaction ids.", rich_help_panel=SIM)
    ] = PopulationConfig.id_prefix,
    new_card_share: Annotated[
        float,
        typer.Option(
            help="Share of cards issued after the start, spread over its first 120 days.",
            rich_help_panel=SIM,
        ),
    ] = PopulationConfig.new_card_share,
    start: Annotated[
        str | None,
        typer.Option(
            help="Event time the simulation starts at: now, now-7d or RFC 3339. "
            "Default: now at --speed 1, else now-7d (a backfill that then runs on in real time).",
            rich_help_panel=SIM,
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Event seconds per wall second: 1 real time, 3600 accelerated, 0 unpaced. "
            "Default 1 (simulation), 0 (replay).",
            rich_help_panel=PACE,
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            help="Most transactions per second (token bucket); 0 = no limit.", rich_help_panel=PACE
        ),
    ] = 0.0,
    count: Annotated[
        int | None, typer.Option(help="Stop after this many transactions.", rich_help_panel=PACE)
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="Stop after this wall time (90s, 10m, 2h).", rich_help_panel=PACE),
    ] = None,
    label_delay: Annotated[
        str | None,
        typer.Option(
            help="Event time from a transaction to its label (like a chargeback). "
            "Default 2d; 7d with --preset handbook.",
            rich_help_panel=LABELS,
        ),
    ] = None,
    label_jitter: Annotated[
        str,
        typer.Option(help="Extra random delay, uniform in [0, jitter).", rich_help_panel=LABELS),
    ] = "0",
    flush_labels: Annotated[
        bool,
        typer.Option(
            help="At the end, publish the labels not yet due as well (each keeps its "
            "available_at), so a finite run ends with complete ground truth. "
            "--no-flush-labels drops them.",
            rich_help_panel=LABELS,
        ),
    ] = True,
    from_file: Annotated[
        Path | None,
        typer.Option(
            help="Replay this CSV or JSONL file (.gz too), streamed.",
            exists=True,
            dir_okay=False,
            rich_help_panel=REPLAY,
        ),
    ] = None,
    preset: Annotated[
        PresetName | None,
        typer.Option(
            help="Built-in mapping: 'handbook' (Fraud Detection Handbook transactions.csv.gz; "
            "without --from-file, the shared copy beside the repository or FRAUD_HANDBOOK_PATH).",
            rich_help_panel=REPLAY,
        ),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="field=COLUMN, repeatable (overrides the preset). Fields: the transaction "
            "fields, plus label (0/1, fraud/legit, true/false) and scenario.",
            rich_help_panel=REPLAY,
        ),
    ] = None,
    scenario_name: Annotated[
        list[str] | None,
        typer.Option(
            help="VALUE=name for the scenario column, repeatable.", rich_help_panel=REPLAY
        ),
    ] = None,
    file_format: Annotated[
        FileFormat | None,
        typer.Option(
            "--format", help="csv or jsonl (default: from the file name).", rich_help_panel=REPLAY
        ),
    ] = None,
    time_format: Annotated[
        str | None,
        typer.Option(
            help="strptime format of the time column, or 'epoch' "
            "(default ISO 8601; no offset = UTC).",
            rich_help_panel=REPLAY,
        ),
    ] = None,
    label_source: Annotated[
        LabelSource | None,
        typer.Option(
            help="Label source: chargeback (default), simulator (handbook), analyst.",
            rich_help_panel=REPLAY,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Read at most this many rows (within the time range).", rich_help_panel=REPLAY
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Skip rows before this event time (inclusive bound).", rich_help_panel=REPLAY
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Skip rows from this event time on (exclusive bound).", rich_help_panel=REPLAY
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            help="Progress bar for a replay (default: when stderr is a terminal).",
            rich_help_panel=REPLAY,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Port of /metrics (default PRODUCER_METRICS_PORT; 0 = any free port).",
            rich_help_panel=OPS,
        ),
    ] = None,
    serve_metrics: Annotated[
        bool, typer.Option("--metrics/--no-metrics", help="Serve /metrics.", rich_help_panel=OPS)
    ] = True,
    create_topics: Annotated[
        bool,
        typer.Option(
            help="Create the transactions, labels and DLQ topics if missing.", rich_help_panel=OPS
        ),
    ] = True,
    log_level: Annotated[
        str | None, typer.Option(help="Log level (default LOG_LEVEL or INFO).", rich_help_panel=OPS)
    ] = None,
) -> None:
    setup_logging("producer", log_level)
    settings = load_settings(ProducerSettings)
    try:
        limits = RunLimits(
            count=count,
            duration_s=parse_duration(duration) if duration else None,
            rate=rate,
            flush_labels=flush_labels,
        )
        jitter_s = parse_duration(label_jitter)
        replay = None
        if from_file is None and preset == PresetName.handbook:
            from_file = handbook_path()
        if from_file is not None:
            replay = configure(
                from_file,
                preset.value if preset else None,
                mapping=mapping_from_flags(map_ or []),
                scenario_names=mapping_from_flags(scenario_name or []),
                label_source=label_source.value if label_source else None,
                label_delay_s=parse_duration(label_delay) if label_delay else None,
                label_jitter_s=jitter_s,
                file_format=file_format.value if file_format else None,
                time_format=time_format,
                limit=limit,
                since=parse_instant(since) if since else None,
                until=parse_instant(until) if until else None,
                seed=seed,
            )
        elif map_:
            raise ValueError("--map needs --from-file")
        options = RunOptions(
            limits=limits,
            speed=speed,
            population=PopulationConfig(
                seed=seed,
                users=users,
                merchants=merchants,
                tx_per_user_day=tx_per_user_day,
                id_prefix=id_prefix,
                new_card_share=new_card_share,
            ),
            traffic=TrafficConfig(
                start=parse_instant(start) if start else None,
                fraud_rate=fraud_rate,
                scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()),
                label_delay_s=(
                    parse_duration(label_delay) if label_delay else TrafficConfig.label_delay_s
                ),
                label_jitter_s=jitter_s,
            ),
            replay=replay,
            create_topics=create_topics,
        )
        prepared = prepare_source(options)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None

    if serve_metrics:
        port = settings.producer_metrics_port if metrics_port is None else metrics_port
        _server, bound = metrics.serve(port)
        logger.info("metrics served %s", kv(port=bound, path="/metrics"))

    stop = threading.Event()
    _install_signal_handlers(stop)
    show_progress = console.is_terminal if progress is None else progress
    try:
        if prepared.replay is not None and show_progress:
            summary = _run_with_progress(settings, options, stop, prepared)
        else:
            summary = execute(settings, options, stop, prepared=prepared)
    except TimeoutError as exc:
        logger.error("kafka unreachable at start %s", kv(error=exc))
        raise typer.Exit(EXIT_KAFKA) from None
    except KafkaUnavailable as exc:
        logger.error("kafka lost %s", kv(error=exc))
        raise typer.Exit(EXIT_KAFKA) from None
    except ValueError as exc:  # a replay file that does not fit its mapping
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    _print_summary(summary)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_DELIVERY)


def _run_with_progress(
    settings: ProducerSettings, options: RunOptions, stop: threading.Event, prepared: Prepared
) -> RunSummary:
    replay = prepared.replay
    assert replay is not None
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(replay.config.path.name, total=replay.total_bytes, counts="")
        last = 0.0

        def show(summary: RunSummary, final: bool = False) -> None:
            nonlocal last
            now = time.monotonic()
            if final or now - last >= 0.2:  # redrawing costs; the loop ticks far more often
                last = now
                counts = (
                    f"tx {summary.transactions:,}  labels {summary.labels:,}  "
                    f"rejected {summary.dead_lettered:,}"
                )
                bar.update(task, completed=replay.bytes_read(), counts=counts)

        summary = execute(settings, options, stop, on_tick=show, prepared=prepared)
        show(summary, final=True)
    return summary


def _install_signal_handlers(stop: threading.Event) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping %s", kv(signal=signal.Signals(signum).name))
        stop.set()
        # A second signal ends the process at once.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def _print_summary(summary: RunSummary) -> None:
    table = Table(title=f"producer run ({summary.source}, stopped by {summary.stopped_by})")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = {
        "transactions produced": summary.transactions,
        "labels produced": summary.labels,
        "labels not published": summary.labels_dropped,
        "rows dead-lettered": summary.dead_lettered,
        "validation failures": summary.validation_failures,
        "delivered (all topics)": sum(summary.delivered.values()),
        "delivery failures": sum(summary.delivery_failures.values()),
        "undelivered at exit": summary.undelivered,
    }
    for name, value in rows.items():
        table.add_row(name, f"{value:,}")
    if summary.wall_s > 0:
        table.add_row("transactions per second", f"{summary.transactions / summary.wall_s:,.0f}")
    console.print(table)


def main() -> None:
    app()
