"""The scorer's HTTP side: health, readiness, metrics, the model in use, and read-only
scoring of one transaction or a batch (features from the current state, state unchanged).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraudcore.contracts import (
    ContractError,
    decode_transaction,
    load_schema,
    non_finite_number,
    unparseable_as_found,
)
from fraudcore.features import FEATURE_NAMES, TxnInput
from scorer import explain
from scorer.service import Scorer

# The OpenAPI document of POST /score, which reads its body itself (one transaction or an
# array, each checked as on the topic): what it takes and every answer it gives.
_TRANSACTION = {k: v for k, v in load_schema("transactions").items() if k not in ("$schema", "$id")}
_SCORE = {
    "type": "object",
    "required": [
        "transaction_id",
        "score",
        "threshold",
        "alert",
        "severity",
        "reasons",
        "features",
        "model_name",
        "model_version",
    ],
    "properties": {
        "transaction_id": {"type": "string"},
        "score": {"type": "number"},
        "threshold": {"type": "number"},
        "alert": {"type": "boolean"},
        "severity": {"enum": [*explain.SEVERITIES, None]},
        "reasons": {"type": "array", "maxItems": 3, "items": {"type": "object"}},
        "features": {
            "type": "object",
            "required": list(FEATURE_NAMES),
            "additionalProperties": {"type": ["number", "null"]},
        },
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
    },
}
_REFUSED = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["field", "reason", "msg"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "field": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                    "msg": {"type": "string"},
                },
            },
        }
    },
}
_NOT_READY = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}


_MODEL = {
    "type": "object",
    "required": [
        "loaded",
        "name",
        "version",
        "alias",
        "threshold",
        "features",
        "components",
        "metadata",
    ],
    "properties": {
        "loaded": {"const": True},
        "name": {"type": "string"},
        "version": {"type": "string"},
        "alias": {"type": "string"},
        "threshold": {"type": "number"},
        "features": {"type": "array", "items": {"type": "string"}},
        "components": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object"},
    },
}
_READY = {
    "type": "object",
    "required": ["ready", "kafka", "redis", "model", "model_error", "stalled", "since_progress_s"],
    "properties": {
        "ready": {"type": "boolean"},
        "kafka": {"type": "boolean"},
        "redis": {"type": "boolean"},
        "model": {"type": ["string", "null"]},
        "model_error": {"type": ["string", "null"]},
        "stalled": {"type": "boolean"},
        "since_progress_s": {"type": "number"},
    },
}
_NO_MODEL = {
    "type": "object",
    "required": ["loaded", "error"],
    "properties": {"loaded": {"const": False}, "error": {"type": ["string", "null"]}},
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SCORE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_TRANSACTION, {"type": "array", "items": _TRANSACTION}]}
            }
        },
    },
}
SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _json(
        "A score for the transaction, or an array of them in the order given",
        {"oneOf": [_SCORE, {"type": "array", "items": _SCORE}]},
    ),
    422: _json(
        "Nothing scored: every refused transaction (`index` in an array) with the field and "
        "the reason, as the dead-letter topic would have them",
        _REFUSED,
    ),
    503: _json("No model or no Redis yet", _NOT_READY),
}


def create_app(scorer: Scorer) -> FastAPI:
    app = FastAPI(title="fraud scorer", version="1")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        responses={
            200: _json("Kafka, Redis and a model are there, and batches progress", _READY),
            503: _json("Not ready: the fields say what is missing", _READY),
        },
    )
    def ready() -> JSONResponse:
        body = {
            "ready": scorer.ready,
            "kafka": scorer.health.kafka,
            "redis": scorer.health.redis,
            "model": scorer.models.current.version if scorer.models.current else None,
            "model_error": scorer.models.last_error,
            # Seconds since a batch was committed or there was nothing to do (watchdog.py).
            "stalled": scorer.watchdog.stalled,
            "since_progress_s": round(scorer.watchdog.idle_for_s, 1),
        }
        return JSONResponse(body, status_code=200 if scorer.ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/model",
        responses={
            200: _json("The model version in use", _MODEL),
            503: _json("No model loaded yet", _NO_MODEL),
        },
    )
    def model() -> JSONResponse:
        loaded = scorer.models.current
        if loaded is None:
            return JSONResponse({"loaded": False, "error": scorer.models.last_error}, 503)
        return JSONResponse(
            {
                "loaded": True,
                "name": loaded.name,
                "version": loaded.version,
                "alias": scorer.models.alias,
                "threshold": loaded.threshold,
                "features": list(loaded.model.feature_names),
                "components": [c.kind for c in loaded.model.components],
                "metadata": _jsonable(loaded.model.metadata),
            }
        )

    @app.post("/score", openapi_extra=SCORE_OPENAPI, responses=SCORE_RESPONSES)
    async def score(request: Request) -> JSONResponse:
        """Body: one transaction (transactions.v1) or a JSON array of them."""
        loaded = scorer.models.current
        store = scorer.store
        if loaded is None or store is None:
            return JSONResponse({"detail": "not ready: no model or no Redis yet"}, 503)
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return JSONResponse({"detail": [_unparseable(raw, exc)]}, 422)
        records = body if isinstance(body, list) else [body]
        txs, originals, errors = [], [], []
        for index, record in enumerate(records):
            try:
                raw = orjson.dumps(record)
                decoded, event_ts = decode_transaction(
                    raw,
                    max_bytes=scorer.settings.scorer_max_message_bytes,
                    max_future_s=scorer.settings.scorer_max_future_s,
                )
            except (ContractError, TypeError) as exc:
                reason = exc.reason if isinstance(exc, ContractError) else "unserialisable"
                field = exc.field if isinstance(exc, ContractError) else None
                errors.append({"index": index, "field": field, "reason": reason, "msg": str(exc)})
                continue
            txs.append(TxnInput.from_record(decoded, event_ts))
            originals.append(decoded)
        if errors:
            return JSONResponse({"detail": errors}, 422)
        features = store.compute(txs, readonly=True)
        scores = loaded.score(features)
        alerting = np.flatnonzero(scores >= loaded.threshold)
        explained: list[list[dict[str, Any]]] = [
            [] for _ in originals
        ]  # alerts only, as on the stream
        for index, why in zip(
            alerting.tolist(), loaded.explainer.reasons(features[alerting]), strict=True
        ):
            explained[index] = why
        results = []
        for record, row, value, why in zip(
            originals, features, scores.tolist(), explained, strict=True
        ):
            alert = value >= loaded.threshold
            results.append(
                {
                    "transaction_id": record["transaction_id"],
                    "score": value,
                    "threshold": loaded.threshold,
                    "alert": alert,
                    "severity": explain.severity(value, loaded.threshold) if alert else None,
                    "reasons": why,
                    "features": dict(zip(FEATURE_NAMES, _nullable(row), strict=True)),
                    "model_name": loaded.name,
                    "model_version": loaded.version,
                }
            )
        return JSONResponse(results if isinstance(body, list) else results[0])

    app.state.started_at = time.time()
    return app


def _unparseable(raw: bytes, exc: orjson.JSONDecodeError) -> dict[str, Any]:
    """The 422 entry for a body orjson refused; a number no double holds (NaN, 1e400) is
    named like any bad field, with its index when the body is an array."""
    found = non_finite_number(raw)
    error = unparseable_as_found(found, exc)
    if found is not None and found.path and isinstance(found.path[0], int):
        field = ".".join(str(p) for p in found.path[1:]) or None
        msg = f"{field}: {error.detail}" if field else error.detail
        return {"index": found.path[0], "field": field, "reason": error.reason, "msg": msg}
    return {"field": error.field, "reason": error.reason, "msg": str(error)}


def _nullable(row: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in row]


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY))
