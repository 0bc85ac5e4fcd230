"""HTTP API: alerts (list, detail, analyst feedback), health, readiness, metrics, and the
review page at /."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from alerting.feedback import LabelPublisher, PublishError, build_label
from alerting.metrics import FEEDBACK
from alerting.store import AlertQuery, AlertStore
from fraudcore.contracts import ContractError, format_time, parse_time
from fraudcore.logs import kv

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
# The review page loads nothing from elsewhere; say so to the browser.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

SeverityName = Literal["low", "medium", "high", "critical"]
# The store passes the offset to SQL as a 64-bit integer (SQLite INTEGER, PostgreSQL BIGINT):
# a larger one is refused here, naming the parameter, instead of overflowing in the driver.
MAX_OFFSET = 2**63 - 1


# What the OpenAPI document says of the answers, so that a client (and the schemathesis
# tests) can rely on it: every status an operation gives, and the shape of each body.
_NULLABLE_STRING = {"type": ["string", "null"]}
_SUMMARY_PROPERTIES: dict[str, Any] = {
    "alert_id": {"type": "string"},
    "transaction_id": {"type": "string"},
    "user_id": {"type": "string"},
    "severity": {"enum": ["low", "medium", "high", "critical"]},
    "score": {"type": "number"},
    "threshold": {"type": "number"},
    "model_name": {"type": "string"},
    "model_version": {"type": "string"},
    "event_time": {"type": "string"},
    "processed_at": {"type": "string"},
    "amount": {"type": ["number", "null"]},
    "currency": _NULLABLE_STRING,
    "merchant_id": _NULLABLE_STRING,
    "status": {"enum": ["open", "reviewed"]},
    "verdict": {"enum": ["fraud", "legit", None]},
    "reviewed_at": _NULLABLE_STRING,
}
_SUMMARY = {
    "type": "object",
    "required": list(_SUMMARY_PROPERTIES),
    "properties": _SUMMARY_PROPERTIES,
}
_DETAIL_PROPERTIES: dict[str, Any] = {
    **_SUMMARY_PROPERTIES,
    "note": _NULLABLE_STRING,
    "reasons": {"type": "array", "items": {"type": "object"}},
    "features": {"type": "object"},
    "transaction": {"type": "object"},
    "deliveries": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["sink", "state", "attempts", "last_error", "updated_at"],
            "properties": {
                "sink": {"type": "string"},
                "state": {"type": "string"},
                "attempts": {"type": "integer"},
                "last_error": _NULLABLE_STRING,
                "updated_at": {"type": "string"},
            },
        },
    },
}
_DETAIL = {"type": "object", "required": list(_DETAIL_PROPERTIES), "properties": _DETAIL_PROPERTIES}
_PAGE = {
    "type": "object",
    "required": ["items", "total", "limit", "offset", "next_offset"],
    "properties": {
        "items": {"type": "array", "items": _SUMMARY},
        "total": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]},
    },
}
_ERROR = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_READY = {
    "type": "object",
    "required": ["ready", "checks"],
    "properties": {
        "ready": {"type": "boolean"},
        "checks": {
            "type": "object",
            "required": ["kafka", "database"],
            "properties": {"kafka": {"type": "boolean"}, "database": {"type": "boolean"}},
        },
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _json("No alert with this id", _ERROR)}
_KEY_REFUSED: dict[int | str, dict[str, Any]] = {
    401: _json("No X-API-Key header", _ERROR),
    403: _json("A wrong X-API-Key", _ERROR),
}


def _utc_time_or_empty(schema: dict[str, Any]) -> None:
    """The schema of `from` and `to`: an RFC 3339 time in UTC (what parse_time takes), or
    empty, taken as no bound (what a form sends for a field left blank)."""
    keep: dict[str, Any] = {k: schema[k] for k in ("title", "description") if k in schema}
    schema.clear()
    schema.update(
        keep,
        anyOf=[
            {"type": "string", "format": "date-time", "pattern": r"(Z|\+00:00)$"},
            {"const": ""},
        ],
    )


API_KEY = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The service's ALERTING_API_KEY"
)


class Feedback(BaseModel):
    label: Literal["fraud", "legit"]
    note: str | None = Field(default=None, max_length=2000)


def _time_param(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_time(value, name)
    except ContractError as exc:
        raise HTTPException(
            422, detail=[{"loc": ["query", name], "msg": exc.detail, "type": exc.reason}]
        ) from None


def _summary(row: dict[str, Any], alert: dict[str, Any]) -> dict[str, Any]:
    tx = alert.get("transaction", {})
    return {
        "alert_id": row["alert_id"],
        "transaction_id": row["transaction_id"],
        "user_id": row["user_id"],
        "severity": row["severity"],
        "score": row["score"],
        "threshold": alert["threshold"],
        "model_name": alert["model_name"],
        "model_version": alert["model_version"],
        "event_time": alert["event_time"],
        "processed_at": alert["processed_at"],
        "amount": tx.get("amount"),
        "currency": tx.get("currency"),
        "merchant_id": tx.get("merchant_id"),
        "status": row["status"],
        "verdict": row["verdict"],
        "reviewed_at": format_time(row["reviewed_ts"]) if row["reviewed_ts"] else None,
    }


def _detail(row: dict[str, Any]) -> dict[str, Any]:
    alert = orjson.loads(row["payload"])
    return {
        **_summary(row, alert),
        "note": row["note"],
        "reasons": alert["reasons"],
        "features": alert.get("features", {}),
        "transaction": alert.get("transaction", {}),
        "deliveries": [
            {
                "sink": d["sink"],
                "state": d["state"],
                "attempts": d["attempts"],
                "last_error": d["last_error"],
                "updated_at": format_time(d["updated_ts"]),
            }
            for d in row["deliveries"]
        ],
    }


def create_app(
    store: AlertStore,
    labels: LabelPublisher,
    api_key: str,
    kafka_ok: Callable[[], bool],
) -> FastAPI:
    app = FastAPI(title="Fraud alerting", version="1")
    expected_key = api_key.encode("utf-8")

    def require_key(x_api_key: str | None) -> None:
        if not x_api_key:
            raise HTTPException(401, "missing X-API-Key header", {"WWW-Authenticate": "ApiKey"})
        if not hmac.compare_digest(x_api_key.encode("utf-8"), expected_key):
            raise HTTPException(403, "wrong API key")

    class KeyFirst(APIRoute):
        """Checks the key before FastAPI reads the body, which it does before any
        dependency runs: without this, a request with no key and a body that is no JSON
        got 400 or 422, an answer about the body, instead of 401."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def keyed(request: Request) -> Response:
                require_key(request.headers.get(API_KEY.model.name))
                return await handler(request)

            return keyed

    # Security(API_KEY) only declares the key in the OpenAPI document; KeyFirst checks it.
    keyed = APIRouter(route_class=KeyFirst, dependencies=[Security(API_KEY)])

    @app.get("/alerts", responses={200: _json("One page of alerts", _PAGE)})
    def list_alerts(
        user_id: str | None = None,
        severity: Annotated[list[SeverityName] | None, Query()] = None,
        status: Literal["open", "reviewed"] | None = None,
        from_: Annotated[
            str | None,
            Query(
                alias="from",
                description="RFC 3339 UTC, inclusive",
                json_schema_extra=_utc_time_or_empty,
            ),
        ] = None,
        to: Annotated[
            str | None,
            Query(description="RFC 3339 UTC, exclusive", json_schema_extra=_utc_time_or_empty),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        query = AlertQuery(
            user_id=user_id or None,
            severities=tuple(severity or ()),
            status=status,
            from_ts=_time_param(from_, "from"),
            to_ts=_time_param(to, "to"),
            limit=limit,
            offset=offset,
        )
        rows, total = store.list_alerts(query)
        items = [_summary(r, orjson.loads(r["payload"])) for r in rows]
        next_offset = offset + limit if offset + limit < total else None
        return {
            "items": items,
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_offset": next_offset,
        }

    @app.get("/alerts/{alert_id}", responses={200: _json("The alert", _DETAIL), **_NOT_FOUND})
    def get_alert(alert_id: str) -> dict[str, Any]:
        row = store.get_alert(alert_id)
        if row is None:
            raise HTTPException(404, f"no alert {alert_id!r}")
        return _detail(row)

    @keyed.post(
        "/alerts/{alert_id}/feedback",
        responses={
            200: _json(
                "The alert, now reviewed, and the label published",
                {
                    "type": "object",
                    "required": ["alert", "label"],
                    "properties": {"alert": _DETAIL, "label": {"type": "object"}},
                },
            ),
            400: _json("A body that is no JSON", _ERROR),
            **_KEY_REFUSED,
            **_NOT_FOUND,
            503: _json("Kafka did not confirm the label: the alert stays open", _ERROR),
        },
    )
    def give_feedback(alert_id: str, feedback: Feedback) -> dict[str, Any]:
        row = store.get_alert(alert_id)
        if row is None:
            raise HTTPException(404, f"no alert {alert_id!r}")
        alert = orjson.loads(row["payload"])
        try:
            label = build_label(alert, row["event_ts"], feedback.label, feedback.note, time.time())
        except ContractError as exc:
            raise HTTPException(422, f"cannot build a label: {exc}") from None
        try:
            # Published before the alert is marked: a failure leaves it open to retry.
            labels.publish(label)
        except PublishError as exc:
            logger.error("label not published %s", kv(alert_id=alert_id, error=exc))
            raise HTTPException(503, str(exc)) from None
        store.mark_reviewed(alert_id, feedback.label, feedback.note)
        FEEDBACK.labels(feedback.label).inc()
        logger.info("analyst verdict %s", kv(alert_id=alert_id, label=feedback.label))
        return {"alert": _detail(store.get_alert(alert_id) or row), "label": label}

    app.include_router(keyed)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        responses={
            200: _json("Kafka and the database answer", _READY),
            503: _json("Kafka or the database does not answer", _READY),
        },
    )
    def ready() -> JSONResponse:
        checks = {"kafka": kafka_ok(), "database": _db_ok(store)}
        code = 200 if all(checks.values()) else 503
        return JSONResponse({"ready": code == 200, "checks": checks}, status_code=code)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _db_ok(store: AlertStore) -> bool:
    try:
        store.ping()
        return True
    except Exception as exc:  # readiness reports any failure, it never raises
        logger.warning("database not ready %s", kv(error=exc))
        return False
