"""MLflow: logging a trained FraudModel, registering it and the promotion gate.

Order matters for the scorer, which only ever follows the `champion` alias: the version is
logged and registered completely (and READY) before any alias moves, so a trainer killed at
any point leaves the alias on a complete version.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fraudcore.features import FEATURE_NAMES
from fraudcore.logs import kv
from fraudcore.model import FraudModel

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def wait_for_mlflow(client: MlflowClient, timeout_s: float) -> None:
    """Block until the tracking server answers, or raise TimeoutError (bounded, logged)."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            client.search_registered_models(max_results=1)
            logger.info("mlflow reachable %s", kv(attempt=attempt))
            return
        except MlflowException as exc:
            if exc.error_code not in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR"):
                raise
            error: Exception = exc
        except OSError as exc:  # connection refused / reset, DNS
            error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"MLflow not reachable after {timeout_s:.0f}s: {error}")
        logger.info("waiting for mlflow %s", kv(attempt=attempt, error=error))
        time.sleep(min(2.0, 0.2 * attempt))


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the champion alias points at, or None (no model or no alias)."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def load_version(name: str, version: str) -> FraudModel:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    if not isinstance(model, FraudModel):
        raise TypeError(f"version {version} of {name} is a {type(model).__name__}, not FraudModel")
    return model


def frame(features: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(features, columns=list(FEATURE_NAMES))


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str | None
    candidate: float | None
    champion: float | None
    champion_version: str | None


def decide(
    candidate_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    champion_version_: str | None,
    champion_error: str | None = None,
) -> GateDecision:
    """Who is champion after this run.

    - no champion yet: the candidate;
    - the champion cannot be loaded or scored: the candidate (the scorer cannot use the
      champion either, and the candidate was just loaded-tested by being logged);
    - labels on the holdout: higher average precision wins, a tie keeps the champion;
    - no labelled fraud on the holdout: nothing shows the candidate is better, so the
      champion stays and the candidate becomes challenger (promote it by hand with
      `python -m trainer promote`).
    """
    metric = "average_precision"
    candidate = candidate_metrics.get(metric)
    if champion_version_ is None:
        return GateDecision(True, "no_champion", metric, candidate, None, None)
    if champion_error is not None or champion_metrics is None:
        return GateDecision(True, "champion_unusable", metric, candidate, None, champion_version_)
    current = champion_metrics.get(metric)
    if candidate is None or current is None or math.isnan(candidate) or math.isnan(current):
        return GateDecision(False, "no_labels_on_holdout", None, None, None, champion_version_)
    if candidate > current:
        return GateDecision(True, "beats_champion", metric, candidate, current, champion_version_)
    return GateDecision(False, "champion_not_beaten", metric, candidate, current, champion_version_)


def move_alias(client: MlflowClient, name: str, version: str, decision: GateDecision) -> str:
    """Set champion or challenger on `version`; returns the alias set."""
    alias = CHAMPION if decision.promote else CHALLENGER
    client.set_registered_model_alias(name, alias, version)
    logger.info(
        "alias set %s",
        kv(
            model=name,
            version=version,
            alias=alias,
            reason=decision.reason,
            metric=decision.metric,
            candidate=decision.candidate,
            champion=decision.champion,
            champion_version=decision.champion_version,
        ),
    )
    return alias


def decision_tags(decision: GateDecision) -> dict[str, str]:
    tags: dict[str, Any] = {
        "gate.decision": CHAMPION if decision.promote else CHALLENGER,
        "gate.reason": decision.reason,
        "gate.metric": decision.metric or "none",
        "gate.candidate": decision.candidate,
        "gate.champion": decision.champion,
        "gate.champion_version": decision.champion_version or "none",
    }
    return {k: ("none" if v is None else str(v)) for k, v in tags.items()}
