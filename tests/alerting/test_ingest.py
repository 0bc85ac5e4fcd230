"""Consuming and storing: valid alerts stored once by alert_id, invalid ones dead-lettered
with the reason, the field and where they came from; the consumer keeps going."""

from __future__ import annotations

import json
from collections.abc import Callable

from confluent_kafka import Producer

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
        assert headers["dlq.reason"] == reason
        assert headers["dlq.field"] == field
        assert headers["dlq.source.topic"] == service_config.alerts_topic
        assert int(headers["dlq.source.partition"]) in range(3)
        assert int(headers["dlq.source.offset"]) >= 0
        assert headers["dlq.detail"]

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


def test_an_alert_as_large_as_the_broker_takes_is_dead_lettered_truncated(
    service_config: ServiceConfig, start_service: Callable[..., Service], unique_name
) -> None:
    """Its copy with dead-letter headers fits neither the producer's 1,000,000 bytes nor
    the broker's 1,048,588: only its first bytes go, marked so, and the consumer goes on."""
    user = unique_name("user")
    huge = make_alert(user)
    huge["score"] = 1.5
    huge["padding"] = "p" * 1_040_000
    raw = json.dumps(huge).encode()
    producer = Producer({"bootstrap.servers": service_config.bootstrap,
                         "message.max.bytes": 2_000_000})  # fmt: skip
    producer.produce(service_config.alerts_topic, raw, user.encode())
    assert producer.flush(30) == 0
    after = make_alert(user)
    service = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, [after])

    dead = consume(service_config.bootstrap, service_config.dlq_topic, 1)
    assert len(dead) == 1
    headers = headers_of(dead[0])
    assert headers["dlq.reason"] == "schema_violation" and headers["dlq.field"] == "score"
    assert headers["dlq.truncated"] == "true"
    assert int(headers["dlq.original.size"]) == len(raw)
    assert raw.startswith(dead[0].value() or b"x") and len(dead[0].value() or b"") < 1_000_000
    assert wait_until(lambda: service.alerts(user_id=user)["total"] == 1)
