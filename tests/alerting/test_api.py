"""The HTTP API against a running service fed through Kafka: API key, analyst feedback to
the labels topic, pagination and filters; the service refuses to start without a key."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import orjson
import pytest

from fraudcore.contracts import decode_label, format_time
from tests.alerting.helpers import (
    REPO_ROOT,
    Service,
    ServiceConfig,
    consume,
    make_alert,
    produce,
    wait_until,
)


@pytest.mark.parametrize(("key", "says"), [(None, "required"), ("  ", "is empty")])
def test_service_refuses_to_start_without_an_api_key(
    service_config: ServiceConfig, key: str | None, says: str
) -> None:
    env = service_config.env()
    if key is None:
        del env["ALERTING_API_KEY"]
    else:
        env["ALERTING_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "alerting"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "ALERTING_API_KEY" in done.stderr and says in done.stderr


def test_service_refuses_a_broken_rules_file_naming_the_field(
    service_config: ServiceConfig,
) -> None:
    service_config.rules = '[sinks.log]\ntype = "log"\n[[routes]]\nname = "x"\nsinks = ["pager"]\n'
    done = subprocess.run(
        [sys.executable, "-m", "alerting", "--check-config"],
        cwd=REPO_ROOT,
        env=service_config.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "routes.0.sinks" in done.stderr and "'pager'" in done.stderr


def test_feedback_needs_the_key_publishes_a_label_and_marks_the_alert_reviewed(
    service_config: ServiceConfig, start_service: Callable[..., Service], unique_name
) -> None:
    alert = make_alert(unique_name("user"), merchant_id=unique_name("merchant"))
    service = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, [alert])
    assert wait_until(lambda: service.http.get(f"/alerts/{alert['alert_id']}").status_code == 200)
    url = f"/alerts/{alert['alert_id']}/feedback"
    verdict = {"label": "fraud", "note": "customer confirmed card stolen"}

    assert service.http.post(url, json=verdict).status_code == 401
    wrong = service.http.post(url, json=verdict, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403
    assert service.http.get(f"/alerts/{alert['alert_id']}").json()["status"] == "open"
    key = {"X-API-Key": service_config.api_key}
    assert service.http.post(url, json={"label": "maybe"}, headers=key).status_code == 422
    assert service.http.post("/alerts/nope/feedback", json=verdict, headers=key).status_code == 404

    before = time.time()
    answer = service.http.post(url, json=verdict, headers=key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["alert"]["status"] == "reviewed"

    [msg] = consume(service_config.bootstrap, service_config.labels_topic, 1)
    assert msg.key() == alert["transaction_id"].encode()
    label, available_at = decode_label(msg.value())  # conforms to labels.v1
    assert label["label"] == "fraud" and label["source"] == "analyst"
    assert label["user_id"] == alert["user_id"]
    assert label["merchant_id"] == alert["transaction"]["merchant_id"]
    assert label["transaction_time"] == alert["event_time"]
    assert label["note"] == verdict["note"]
    assert before - 1 <= available_at <= time.time() + 1

    stored = service.http.get(f"/alerts/{alert['alert_id']}").json()
    assert (stored["status"], stored["verdict"], stored["note"]) == (
        "reviewed",
        "fraud",
        verdict["note"],
    )
    assert 'alerting_feedback_total{label="fraud"} 1.0' in service.http.get("/metrics").text


def test_pagination_and_filters(
    service_config: ServiceConfig, start_service: Callable[..., Service], unique_name
) -> None:
    users = [unique_name("user") for _ in range(3)]
    base = time.time() - 3600
    severities = ["low", "medium", "high", "critical"]
    alerts = [
        make_alert(users[i % 3], severity=severities[i % 4], event_ts=base + 60 * i)
        for i in range(23)
    ]
    service = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, alerts)
    assert wait_until(lambda: service.alerts()["total"] == 23)

    pages, offset = [], 0
    while offset is not None:
        page = service.alerts(limit=10, offset=offset)
        assert page["total"] == 23 and len(page["items"]) <= 10
        pages.append(page["items"])
        offset = page["next_offset"]
    assert [len(p) for p in pages] == [10, 10, 3]
    ids = [a["alert_id"] for p in pages for a in p]
    assert ids == [a["alert_id"] for a in reversed(alerts)]  # newest event first

    mine = service.alerts(user_id=users[1])
    assert {a["alert_id"] for a in mine["items"]} == {
        a["alert_id"] for a in alerts if a["user_id"] == users[1]
    }
    urgent = service.alerts(severity=["high", "critical"], limit=100)
    assert {a["severity"] for a in urgent["items"]} == {"high", "critical"}
    assert urgent["total"] == sum(a["severity"] in ("high", "critical") for a in alerts)
    window = service.alerts(
        **{"from": format_time(base + 60 * 5), "to": format_time(base + 60 * 10)}
    )
    assert [a["alert_id"] for a in window["items"]] == [a["alert_id"] for a in alerts[5:10]][::-1]

    key = {"X-API-Key": service_config.api_key}
    target = alerts[7]["alert_id"]
    assert (
        service.http.post(
            f"/alerts/{target}/feedback", json={"label": "legit"}, headers=key
        ).status_code
        == 200
    )
    reviewed = service.alerts(status="reviewed")
    assert [a["alert_id"] for a in reviewed["items"]] == [target]
    assert reviewed["items"][0]["verdict"] == "legit"
    assert service.alerts(status="open")["total"] == 22

    bad = service.http.get("/alerts", params={"from": "yesterday"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "from"]
    assert service.http.get("/alerts", params={"severity": "urgent"}).status_code == 422
    assert service.http.get("/alerts", params={"limit": 0}).status_code == 422
    assert service.http.get("/alerts/does-not-exist").status_code == 404
    assert orjson.loads(service.http.get("/health").content) == {"status": "ok"}
    assert service.http.get("/ready").json()["checks"] == {"kafka": True, "database": True}


# (query, the parameter its 422 names, pydantic's error type)
OUT_OF_RANGE: list[tuple[dict[str, int | str], str, str]] = [
    ({"offset": 2**63}, "offset", "less_than_equal"),  # one past SQL's BIGINT
    ({"offset": 10**30}, "offset", "less_than_equal"),
    ({"offset": "9" * 5000}, "offset", "int_parsing_size"),
    ({"offset": -1}, "offset", "greater_than_equal"),
    ({"offset": "1e3"}, "offset", "int_parsing"),
    ({"limit": 501}, "limit", "less_than_equal"),
    ({"limit": 2**63}, "limit", "less_than_equal"),
]


def test_out_of_range_pagination_is_refused_naming_the_parameter(
    start_service: Callable[..., Service],
) -> None:
    service = start_service()
    for params, name, kind in OUT_OF_RANGE:
        answer = service.http.get("/alerts", params=params)
        assert answer.status_code == 422, (params, answer.text)
        [error] = answer.json()["detail"]
        assert (error["loc"], error["type"]) == (["query", name], kind), params


def test_the_largest_offset_is_an_empty_page(
    service_config: ServiceConfig, start_service: Callable[..., Service], unique_name
) -> None:
    alert = make_alert(unique_name("user"))
    service = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, [alert])
    assert wait_until(lambda: service.alerts()["total"] == 1)
    page = service.alerts(offset=2**63 - 1, limit=500)
    assert page == {"items": [], "total": 1, "limit": 500, "offset": 2**63 - 1, "next_offset": None}


def test_feedback_checks_the_key_before_reading_the_body(
    service_config: ServiceConfig, start_service: Callable[..., Service]
) -> None:
    # FastAPI reads a JSON body before any dependency runs: a keyless request with a
    # broken body got 422 (or 400), found by tests/alerting/test_api_schemathesis.py.
    service = start_service()
    url = "/alerts/any/feedback"
    json_type = {"Content-Type": "application/json"}
    for body, with_key in [(b"\x00", 422), (b"{not json", 422), (b"\xff\x19", 400)]:
        keyless = service.http.post(url, content=body, headers=json_type)
        assert keyless.status_code == 401, (body, keyless.text)
        assert keyless.headers["WWW-Authenticate"] == "ApiKey"
        wrong = service.http.post(url, content=body, headers={**json_type, "X-API-Key": "nope"})
        assert wrong.status_code == 403, (body, wrong.text)
        keyed = service.http.post(
            url, content=body, headers={**json_type, "X-API-Key": service_config.api_key}
        )
        assert keyed.status_code == with_key, (body, keyed.text)
