"""scorer.pipeline.outputs against the implementation it replaced, byte for byte.

`reference_outputs` is the earlier outputs() (one dict per row, serialised by orjson),
kept here as the reference; the current one serialises the feature matrix at once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Message

from fraudcore.features import FEATURE_NAMES, TxnInput
from scorer import explain
from scorer.pipeline import ALERT_NAMESPACE, Accepted, OutMessage, outputs
from scorer.treeeval import compile_model
from tests.scorer.models import boosted_model


def reference_outputs(
    accepted: Sequence[Accepted],
    features: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float,
    explainer: explain.Explainer,
    model_name: str,
    model_version: str,
    scores_topic: str,
    alerts_topic: str,
    emit_scores: bool,
    processed_at: str,
) -> tuple[list[OutMessage], list[str]]:
    out: list[OutMessage] = []
    severities: list[str] = []
    score_list = scores.tolist()
    alerting = [i for i, score in enumerate(score_list) if score >= threshold]
    reasons = dict(zip(alerting, explainer.reasons(features[alerting]), strict=True))
    for i, (item, row, score) in enumerate(
        zip(accepted, features.tolist(), score_list, strict=True)
    ):
        record = item.record
        key = record["user_id"].encode()
        feature_map = dict(zip(FEATURE_NAMES, row, strict=True))
        if emit_scores:
            message = {
                "schema_version": 1,
                "transaction_id": record["transaction_id"],
                "user_id": record["user_id"],
                "merchant_id": record["merchant_id"],
                "event_time": record["timestamp"],
                "score": score,
                "model_name": model_name,
                "model_version": model_version,
                "features": feature_map,
                "processed_at": processed_at,
            }
            out.append(OutMessage(scores_topic, key, orjson.dumps(message)))
        if i in reasons:
            level = explain.severity(score, threshold)
            severities.append(level)
            why = reasons[i] or [
                {
                    "feature": "score",
                    "value": score,
                    "usual": threshold,
                    "text": f"score {score:.3f} is over the threshold {threshold:.3f}",
                }
            ]
            alert = {
                "schema_version": 1,
                "alert_id": str(uuid.uuid5(ALERT_NAMESPACE, record["transaction_id"])),
                "transaction_id": record["transaction_id"],
                "user_id": record["user_id"],
                "transaction": record,
                "score": score,
                "threshold": threshold,
                "severity": level,
                "model_name": model_name,
                "model_version": model_version,
                "reasons": why,
                "features": feature_map,
                "event_time": record["timestamp"],
                "processed_at": processed_at,
            }
            out.append(OutMessage(alerts_topic, key, orjson.dumps(alert)))
    return out, severities


EDGE_VALUES = [
    np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 3.0, 1e-7, 1e-5, 1e16, 1e22, 123456789.123,
    5e-324, 1.7976931348623157e308, 0.1 + 0.2, 2.0**53 + 1, -1.5,
]  # fmt: skip


def batch(n: int, seed: int) -> tuple[list[Accepted], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    accepted = []
    for i in range(n):
        record: dict[str, Any] = {
            "schema_version": 1,
            "transaction_id": f"tx-{seed}-{i}-ü",
            "user_id": ["c1", "日本", 'q"uo\\te', "😀"][i % 4],
            "merchant_id": f"m{i % 5}",
            "amount": float(rng.uniform(0, 900)),
            "timestamp": "2026-11-01T08:42:17.123Z",
        }
        if i % 3:
            record["country"] = "FR"
            record["extra"] = {"nested": [1, None, "x"]}
        msg = Message(topic="transactions", partition=0, offset=i, value=orjson.dumps(record))
        accepted.append(Accepted(msg, record, 1.79e9, TxnInput.from_record(record, 1.79e9)))
    features = rng.lognormal(1.0, 2.0, (n, len(FEATURE_NAMES)))
    features[rng.random(features.shape) < 0.2] = np.nan
    features[:, 2] = rng.integers(0, 2, n)  # flags stay whole numbers
    edges = rng.random(features.shape) < 0.05
    features[edges] = rng.choice(EDGE_VALUES, int(edges.sum()))
    scores = rng.random(n)
    scores[::7] = 0.9  # exactly at the threshold alerts
    return accepted, features, scores


def explainer_for(features: np.ndarray) -> explain.Explainer:
    """Reasons from a small boosted model fitted on `features` (its target: the first
    two features high)."""
    finite = np.nan_to_num(np.where(np.isfinite(features), features, np.nan), nan=0.0)
    target = (finite[:, 0] + finite[:, 4] > np.median(finite[:, 0] + finite[:, 4])).astype(int)
    if target.min() == target.max():
        target[: len(target) // 2] = 1 - target[0]
    model = boosted_model(np.asarray(features, dtype=np.float64), target, iterations=10)
    return explain.Explainer(model, compile_model(model))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the huge edge values
@pytest.mark.parametrize("emit_scores", [True, False])
@pytest.mark.parametrize("layout", ["float64", "float32", "fortran", "sliced"])
def test_outputs_are_byte_identical_to_the_reference(emit_scores: bool, layout: str) -> None:
    accepted, features, scores = batch(600, seed=len(layout) + emit_scores)
    if layout == "float32":
        features = features.astype(np.float32)
    elif layout == "fortran":
        features = np.asfortranarray(features)
    elif layout == "sliced":
        wide = np.repeat(features, 2, axis=1)
        features = wide[:, ::2]
        assert not features.flags.c_contiguous
    options: dict[str, Any] = {
        "threshold": 0.9,
        "explainer": explainer_for(np.asarray(features, dtype=np.float64)),
        "model_name": "m-ü",
        "model_version": "7",
        "scores_topic": "scores",
        "alerts_topic": "alerts",
        "emit_scores": emit_scores,
        "processed_at": "2026-11-21T08:42:18.000Z",
    }
    got = outputs(accepted, features, scores, **options)
    want = reference_outputs(accepted, features, scores, **options)
    assert got == want
    messages, severities = got
    assert len(severities) >= 600 // 7
    assert len(messages) == (600 if emit_scores else 0) + len(severities)


def test_an_empty_batch_gives_no_messages() -> None:
    accepted, features, scores = batch(0, seed=1)
    features = features.reshape(0, len(FEATURE_NAMES))
    got = outputs(
        accepted,
        features,
        scores,
        threshold=0.5,
        explainer=explainer_for(np.ones((3, len(FEATURE_NAMES)))),
        model_name="m",
        model_version="1",
        scores_topic="scores",
        alerts_topic="alerts",
        emit_scores=True,
        processed_at="2026-11-21T08:42:18.000Z",
    )
    assert got == ([], [])
