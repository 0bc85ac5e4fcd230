"""Follows the MLflow registry alias and keeps a compiled model ready for the loop.

A background thread polls `models:/<name>@<alias>`. When the alias moves, the new version
is loaded and compiled off the hot path, then swapped in with one reference assignment,
so the loop picks it up at its next batch. If MLflow is unreachable the scorer keeps the
model it has; if there has never been one, it reports not-ready and does not consume. A
version trained on other features than the catalogue's (`FraudModel.check_features`) is
refused at load and the model in use is kept.

A poll asks the registry once, and the next poll is the retry. The MLflow client would
otherwise retry a refused connection 7 times with exponential backoff, about four minutes
on one lookup: a minute's outage held the poller for all of it and up to a minute after
MLflow was back (so a new champion was followed that much later), and the first start
with MLflow down waited as long. Every failed poll is counted in
`scorer_model_load_failures_total` (the ScorerModelLoadFailing alert) and logged (the
first, then once a minute while it lasts).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

import mlflow
from fraudcore.features import FEATURE_NAMES
from fraudcore.logs import kv
from fraudcore.model import FeatureContractError, FraudModel
from scorer import metrics
from scorer.explain import Explainer
from scorer.treeeval import CompiledModel, compile_model

logger = logging.getLogger(__name__)

# The MLflow client reads these at every call; set in the environment, they win.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # one attempt a poll: the next poll retries
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # seconds per request (the client's default: 120)
}
# What the registry answers when the model or its alias does not exist (yet).
NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
# While the registry stays unreachable, the warning is repeated this often.
WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: FraudModel
    compiled: CompiledModel
    explainer: Explainer

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.compiled.score(features)


class ModelManager:
    def __init__(self, tracking_uri: str, name: str, alias: str, poll_s: float) -> None:
        for variable, value in MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        self.name = name
        self.alias = alias
        self.poll_s = poll_s
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreachable_since: float | None = None
        self._warned_at = 0.0
        self._refused: str | None = None  # the version last refused by the feature contract

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.current is None and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.2)
        return self.current is not None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def refresh(self) -> bool:
        """Load the version the alias points at if it is not the one in use; True if
        the model changed. Never raises: a failure keeps the current model."""
        try:
            version = self.client.get_model_version_by_alias(self.name, self.alias).version
        except Exception as exc:
            if isinstance(exc, RestException) and exc.error_code in NOT_FOUND:
                self._reachable()
                self.last_error = f"no {self.alias} for {self.name}: {exc.message}"
                if self.current is None:
                    logger.info("no model yet %s", kv(model=self.name, alias=self.alias))
                return False
            # MLflow down or failing: a refused connection, a timeout, a 5xx. (A refused
            # connection is an MlflowException too, not a RestException.)
            metrics.model_load_failures.inc()
            self.last_error = f"registry unreachable: {exc}"
            self._unreachable(exc)
            return False
        self._reachable()
        if self.current is not None and self.current.version == str(version):
            return False
        if self._refused == str(version):
            # Refused at load: counted at every poll while the alias stays on it, so the
            # ScorerModelLoadFailing alert holds, but not downloaded again.
            metrics.model_load_failures.inc()
            return False
        try:
            started = time.perf_counter()
            model = mlflow.sklearn.load_model(f"models:/{self.name}/{version}")
            if not isinstance(model, FraudModel):
                raise TypeError(f"expected a FraudModel, got {type(model).__name__}")
            model.check_features(FEATURE_NAMES)
            compiled = compile_model(model)
            loaded = LoadedModel(
                self.name, str(version), model, compiled, Explainer(model, compiled)
            )
        except FeatureContractError as exc:
            metrics.model_load_failures.inc()
            self._refused = str(version)
            self.last_error = (
                f"version {version} refused: its features are not this scorer's: {exc}"
            )
            logger.error(
                "model refused: its features are not this scorer's; keeping current %s",
                kv(model=self.name, version=version, mismatch=exc,
                   current=self.current.version if self.current else None),
            )  # fmt: skip
            return False
        except Exception as exc:
            metrics.model_load_failures.inc()
            self.last_error = f"loading version {version} failed: {exc}"
            logger.exception("model load failed, keeping current %s", kv(version=version))
            return False
        previous = self.current.version if self.current else None
        self.current = loaded  # the swap: the loop reads self.current once per batch
        self.last_error = None
        metrics.model_version.labels(self.name).set(float(version))
        metrics.model_loaded.set(1)
        metrics.alert_budget.set(float(loaded.model.metadata.get("alert_budget", float("nan"))))
        metrics.model_last_loaded.set(time.time())
        logger.info(
            "model in use %s",
            kv(model=self.name, version=version, previous=previous,
               threshold=loaded.threshold, load_s=round(time.perf_counter() - started, 2)),
        )  # fmt: skip
        return True

    def _unreachable(self, error: Exception) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        elif now - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = now
        logger.warning(
            "model registry unreachable, keeping current model %s",
            kv(model=self.name, version=self.current.version if self.current else None,
               down_s=round(now - self._unreachable_since, 1), error=error),
        )  # fmt: skip

    def _reachable(self) -> None:
        if self._unreachable_since is not None:
            logger.info(
                "model registry reachable again %s",
                kv(down_s=round(time.monotonic() - self._unreachable_since, 1)),
            )
            self._unreachable_since = None
