"""The retrain service, `python -m trainer schedule`: retrains from the topics on its
period, promotes only through the gate, exports its figures and decisions, survives a
failed run, and stops on SIGTERM."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from mlflow.tracking import MlflowClient
from prometheus_client import REGISTRY

from fraudcore.settings import REPO_ROOT, load_settings
from tests.metrics_util import Samples, scrape
from tests.processes import terminate
from tests.stack import free_port
from tests.trainer.conftest import StreamTopics
from trainer.progress import Bars
from trainer.runner import RunOptions
from trainer.schedule import RetrainSchedule
from trainer.settings import ScheduleSettings, TrainerSettings


def _runs(samples: Samples, outcome: str) -> float:
    return samples.get(("trainer_runs_total", (("outcome", outcome),)), 0.0)


def test_the_service_retrains_on_its_period_and_promotes_only_through_the_gate(
    stream_topics: StreamTopics, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    name = unique_name("retrain")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "TOPIC_"))},
        **stream_topics.env(name),
        "FRAUD_ENV_FILE": os.devnull,
        "TRAINER_METRICS_PORT": str(port),
        "TRAINER_RETRAIN_EVERY": "1s",
    }
    log = tmp_path / "retrainer.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer", "schedule"],
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 180
        samples: Samples = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                samples = scrape(url)
            except httpx.TransportError:
                samples = {}
            if _runs(samples, "promoted") + _runs(samples, "kept_champion") >= 2:
                break
            time.sleep(0.5)
        # The same topics twice: the first run becomes champion (there was none), the
        # second ties it on average precision, and a tie keeps the champion.
        assert _runs(samples, "promoted") == 1, log.read_text(errors="replace")[-3000:]
        assert _runs(samples, "kept_champion") == 1, samples
        assert _runs(samples, "failed") == 0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    finally:
        terminate(proc, 10)

    assert samples[("trainer_champion_version", ())] == 1
    assert samples[("trainer_last_version", ())] == 2
    gate = {
        role: samples[("trainer_gate_figure", (("role", role),))]
        for role in ("candidate", "champion")
    }
    assert gate["candidate"] == gate["champion"] and 0 < gate["candidate"] <= 1
    for metric in ("roc_auc", "average_precision", "recall_at_budget"):
        value = samples[("trainer_candidate_figure", (("metric", metric),))]
        assert math.isfinite(value), metric
    assert samples[("trainer_retrain_interval_seconds", ())] == 1
    assert samples[("trainer_training_rows", (("kind", "frauds"),))] > 0

    client = MlflowClient(stream_topics.mlflow_uri, registry_uri=stream_topics.mlflow_uri)
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    second = client.get_model_version(name, "2")
    assert second.tags["gate.decision"] == "challenger"
    assert second.tags["gate.reason"] == "champion_not_beaten"
    assert client.get_model_version_by_alias(name, "challenger").version == "2"


def _counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("trainer_runs_total", {"outcome": outcome}) or 0.0


def test_a_failed_run_is_counted_and_the_next_one_still_comes(
    stream_topics: StreamTopics, unique_name: Callable[[str], str]
) -> None:
    settings = load_settings(
        ScheduleSettings,
        kafka_bootstrap_servers=stream_topics.kafka_bootstrap,
        mlflow_tracking_uri=stream_topics.mlflow_uri,
        model_name=unique_name("retrain-fail"),
        trainer_metrics_port=0,
    )
    calls: list[RunOptions] = []

    def retrain(_: TrainerSettings, options: RunOptions, __: Bars) -> list[dict[str, Any]]:
        calls.append(options)
        if len(calls) == 1:
            raise RuntimeError("the registry went away mid-run")
        return [{"alias": "challenger", "version": "7", "metrics": {}, "gate": {}}]

    failed, kept = _counted("failed"), _counted("kept_champion")
    schedule = RetrainSchedule(settings, every_s=0.01, bars=Bars(enabled=False), retrain=retrain)
    schedule.serve(max_runs=2)
    assert len(calls) == 2
    assert _counted("failed") == failed + 1
    assert _counted("kept_champion") == kept + 1
    # Each run reads the newest transactions, bounded, from the same topics.
    assert calls[0].data.tail == settings.trainer_retrain_max_transactions
    assert calls[0] == calls[1]


def test_sigterm_ends_the_wait_at_once(stream_topics: StreamTopics) -> None:
    settings = load_settings(
        ScheduleSettings,
        kafka_bootstrap_servers=stream_topics.kafka_bootstrap,
        mlflow_tracking_uri=stream_topics.mlflow_uri,
        model_name="unused",
        trainer_metrics_port=0,
    )
    schedule = RetrainSchedule(settings, every_s=3600, bars=Bars(enabled=False))
    waiting = threading.Thread(target=schedule.serve, daemon=True)
    waiting.start()
    schedule.stop()
    waiting.join(timeout=30)  # the hour's wait, ended by the stop
    assert not waiting.is_alive()
    assert schedule.runs == 0
