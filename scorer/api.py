"""The scorer's HTTP side: health, readiness, metrics, the model in use, and read-only
scoring of one transaction or a batch (features from the current state, state unchanged).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraudcore.contracts import ContractError, decode_transaction
from fraudcore.features import FEATURE_NAMES, TxnInput
from scorer import explain
from scorer.service import Scorer


def create_app(scorer: Scorer) -> FastAPI:
    app = FastAPI(title="fraud scorer", version="1")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        body = {
            "ready": scorer.ready,
            "kafka": scorer.health.kafka,
            "redis": scorer.health.redis,
            "model": scorer.models.current.version if scorer.models.current else None,
            "model_error": scorer.models.last_error,
        }
        return JSONResponse(body, status_code=200 if scorer.ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/model")
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

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        """Body: one transaction (transactions.v1) or a JSON array of them."""
        loaded = scorer.models.current
        store = scorer.store
        if loaded is None or store is None:
            return JSONResponse({"detail": "not ready: no model or no Redis yet"}, 503)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return JSONResponse(
                {"detail": [{"field": None, "reason": "unparseable", "msg": str(exc)}]}, 422
            )
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
        explained = loaded.explainer.reasons(features)
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
                    "reasons": why if alert else [],
                    "features": dict(zip(FEATURE_NAMES, _nullable(row), strict=True)),
                    "model_name": loaded.name,
                    "model_version": loaded.version,
                }
            )
        return JSONResponse(results if isinstance(body, list) else results[0])

    app.state.started_at = time.time()
    return app


def _nullable(row: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in row]


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY))
