"""Follows the MLflow registry alias and keeps a compiled model ready for the loop.

A background thread polls `models:/<name>@<alias>`. When the alias moves, the new version
is loaded and compiled off the hot path, then swapped in with one reference assignment,
so the loop picks it up at its next batch. If MLflow is unreachable the scorer keeps the
model it has; if there has never been one, it reports not-ready and does not consume.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlflow
from fraudcore.logs import kv
from fraudcore.model import FraudModel
from scorer import metrics
from scorer.explain import Explainer
from scorer.treeeval import CompiledModel, compile_model

logger = logging.getLogger(__name__)


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
        self.name = name
        self.alias = alias
        self.poll_s = poll_s
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        except MlflowException as exc:
            self.last_error = f"no {self.alias} for {self.name}: {exc.message}"
            if self.current is None:
                logger.info("no model yet %s", kv(model=self.name, alias=self.alias))
            return False
        except Exception as exc:  # MLflow down: connection errors of several kinds
            metrics.model_load_failures.inc()
            self.last_error = f"registry unreachable: {exc}"
            logger.warning("model registry unreachable, keeping current model %s", kv(error=exc))
            return False
        if self.current is not None and self.current.version == str(version):
            return False
        try:
            started = time.perf_counter()
            model = mlflow.sklearn.load_model(f"models:/{self.name}/{version}")
            if not isinstance(model, FraudModel):
                raise TypeError(f"expected a FraudModel, got {type(model).__name__}")
            loaded = LoadedModel(
                self.name, str(version), model, compile_model(model), Explainer(model)
            )
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
        metrics.model_last_loaded.set(time.time())
        logger.info(
            "model in use %s",
            kv(model=self.name, version=version, previous=previous,
               threshold=loaded.threshold, load_s=round(time.perf_counter() - started, 2)),
        )  # fmt: skip
        return True
