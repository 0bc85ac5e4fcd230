"""Consuming and storing: valid alerts stored once by alert_id, invalid ones dead-lettered
with the reason, the field and where they came from; the consumer keeps going."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.alerting.helpers import (
    Service,
    ServiceConfig,
    consume,
    headers_of,
    make_alert,
    produce,
    wait_until,
)


def test_bad_alerts_go_to_dlq_with_reason_and_good_ones_are_stored_once(
    service_config: ServiceConfig, start_service: Callable[..., Service], unique_name
) -> None:
    user = unique_name("user")
    good = [make_alert(user, severity="low", score=0.81), make_alert(user, severity="critical")]
    too_high = make_alert(user)
    too_high["score"] = 1.5
    missing = make_alert(user)
    del missing["reasons"]
    local_time = make_alert(user)
    local_time["processed_at"] = "2026-11-21T10:00:00+02:00"
    bad: list[tuple[bytes | None, str, str]] = [
        (b"{not json", "unparseable", ""),
        (None, "empty", ""),
        (json.dumps([1, 2]).encode(), "not_an_object", ""),
        (json.dumps(too_high).encode(), "schema_violation", "score"),
        (json.dumps(missing).encode(), "missing_field", "reasons"),
        (json.dumps(local_time).encode(), "bad_timestamp", "processed_at"),
    ]
    service = start_service()
    # The same alert twice (a replay) must be stored and delivered once.
    produce(
        service_config.bootstrap,
        service_config.alerts_topic,
        [good[0], *(raw for raw, _, _ in bad), good[1], good[0]],
    )

    dead = consume(service_config.bootstrap, service_config.dlq_topic, len(bad))
    assert len(dead) == len(bad)
    by_value = {m.value(): headers_of(m) for m in dead}
    for raw, reason, field in bad:
        headers = by_value[raw]
        assert headers["reason"] == reason
        assert headers.get("field", "") == field
        assert headers["source_topic"] == service_config.alerts_topic
        assert int(headers["source_partition"]) in range(3)
        assert int(headers["source_offset"]) >= 0
        assert headers["detail"]

    assert wait_until(lambda: service.alerts(user_id=user)["total"] == 2)
    stored = {a["alert_id"]: a for a in service.alerts(user_id=user)["items"]}
    assert set(stored) == {g["alert_id"] for g in good}
    detail = service.http.get(f"/alerts/{good[1]['alert_id']}").json()
    assert [r["text"] for r in detail["reasons"]] == [r["text"] for r in good[1]["reasons"]]
    assert detail["deliveries"] == [
        {
            "sink": "log",
            "state": "delivered",
            "attempts": 1,
            "last_error": None,
            "updated_at": detail["deliveries"][0]["updated_at"],
        }
    ]
    metrics = service.http.get("/metrics").text
    assert "alerting_alerts_received_total 9.0" in metrics
    assert "alerting_alerts_stored_total 2.0" in metrics
    assert 'alerting_alerts_delivered_total{kind="alert",sink="log"} 2.0' in metrics
    assert 'alerting_alerts_dead_lettered_total{reason="unparseable"} 1.0' in metrics
    # Still consuming after the bad ones.
    late = make_alert(user)
    produce(service_config.bootstrap, service_config.alerts_topic, [late])
    assert wait_until(lambda: service.alerts(user_id=user)["total"] == 3)
