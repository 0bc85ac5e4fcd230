"""Delivery through real Kafka to a local webhook: retries, dead letters, the at-least-once
window around a crash, no resend after a restart, and per-user suppression."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from tests.alerting.helpers import (
    Receiver,
    Service,
    ServiceConfig,
    consume,
    headers_of,
    make_alert,
    produce,
    wait_until,
)
from tests.metrics_util import sample


def webhook_rules(url: str, *, window_s: float = 0, workers: int = 4, attempts: int = 4) -> str:
    return f"""
[delivery]
max_attempts = {attempts}
timeout_seconds = 0.4
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.2
workers = {workers}

[suppression]
window_seconds = {window_s}

[sinks.hook]
type = "webhook"
url = "{url}"

[[routes]]
name = "all"
sinks = ["hook"]
"""


def states(service: Service, alert: dict[str, Any]) -> list[str]:
    detail = service.http.get(f"/alerts/{alert['alert_id']}").json()
    return [d["state"] for d in detail["deliveries"]]


def is_suppressed(service: Service, alert: dict[str, Any]) -> bool:
    return states(service, alert) == ["suppressed"]


def test_failing_webhook_every_alert_is_delivered_once_or_dead_lettered(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    alerts = [make_alert(unique_name("user")) for _ in range(16)]
    # What the receiver does with each alert, by the number of times it has seen it.
    plans: dict[str, Callable[[int], Any]] = {}
    for i, alert in enumerate(alerts):
        kind = ["ok", "500-once", "timeout-then-503", "always-500", "400"][i % 5]
        plans[alert["alert_id"]] = {
            "ok": lambda n: 200,
            "500-once": lambda n: 500 if n == 1 else 200,
            "timeout-then-503": lambda n: (
                ("sleep", 1.0, 503) if n == 1 else (503 if n == 2 else 200)
            ),
            "always-500": lambda n: 500,
            "400": lambda n: 400,
        }[kind]
    hook = receiver(lambda key, n: plans[str(key)](n))
    service_config.rules = webhook_rules(hook.url)
    service = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, alerts)

    doomed = {a["alert_id"] for i, a in enumerate(alerts) if i % 5 in (3, 4)}
    dead = consume(service_config.bootstrap, service_config.dlq_topic, len(doomed))
    expected_ok = {a["alert_id"] for a in alerts} - doomed
    assert wait_until(lambda: set(hook.deduped()) == expected_ok)

    dead_ids = {headers_of(m)["dlq.alert_id"] for m in dead}
    assert dead_ids == doomed
    for msg in dead:
        h = headers_of(msg)
        assert h["dlq.reason"] == "delivery_failed" and h["dlq.sink"] == "hook"
        assert h["dlq.source.topic"] == service_config.alerts_topic
        if "HTTP 500" in h["dlq.last_error"]:
            assert h["dlq.attempts"] == "4"  # retried up to max_attempts
        else:
            assert h["dlq.last_error"].startswith("HTTP 400") and h["dlq.attempts"] == "1"
    # Exactly once: no alert accepted twice, none both accepted and dead-lettered.
    assert all(count == 1 for count in hook.raw_counts().values())
    assert not dead_ids & set(hook.deduped())
    for alert in alerts:
        state = "dead_lettered" if alert["alert_id"] in doomed else "delivered"
        assert states(service, alert) == [state]
    timed_out = [a["alert_id"] for i, a in enumerate(alerts) if i % 5 == 2]
    assert service.http.get(f"/alerts/{timed_out[0]}").json()["deliveries"][0]["attempts"] == 3
    metrics = service.http.get("/metrics").text
    assert (
        f'alerting_alerts_delivered_total{{kind="alert",sink="hook"}} {len(expected_ok)}.0'
        in metrics
    )
    assert f'alerting_alerts_failed_total{{sink="hook"}} {len(doomed)}.0' in metrics


def test_kill_between_send_and_commit_resends_once_and_idempotency_key_dedupes(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    alerts = [make_alert(unique_name("user")) for _ in range(6)]
    victim: dict[str, Any] = {}

    def decide(key: str | None, n: int) -> Any:
        if len(hook.requests) == 2 and "key" not in victim:
            victim["key"] = key

            def kill() -> None:
                time.sleep(0.3)  # let the previous delivery's record reach the database
                os.kill(victim["pid"], signal.SIGKILL)

            return kill  # the receiver got it; the sender dies before it hears back
        return 200

    hook = receiver(decide)
    # One worker: sends are sequential, so exactly one is in flight at the kill.
    service_config.rules = webhook_rules(hook.url, workers=1)
    first = start_service()
    victim["pid"] = first.pid
    produce(service_config.bootstrap, service_config.alerts_topic, alerts)
    assert first.wait_killed() == -signal.SIGKILL
    assert "key" in victim

    second = start_service()  # same group, same database
    everything = {a["alert_id"] for a in alerts}

    # Wait for the second instance's own records, not for the receiver: the in-flight
    # alert already arrived once, so "every key seen" can hold before it is resent.
    def all_delivered() -> bool:
        for alert in alerts:
            answer = second.http.get(f"/alerts/{alert['alert_id']}")
            if answer.status_code != 200:
                return False
            if [d["state"] for d in answer.json()["deliveries"]] != ["delivered"]:
                return False
        return True

    assert wait_until(all_delivered)
    raw = hook.raw_counts()
    # The window is real: without dedupe the receiver acted twice on the in-flight one...
    assert raw[victim["key"]] == 2
    # ...and only on that one: what was recorded as delivered was not resent.
    assert {k for k, c in raw.items() if c > 1} == {victim["key"]}
    # With dedupe on Idempotency-Key (= alert_id) each alert reaches it once.
    assert set(hook.deduped()) == everything and len(hook.deduped()) == len(alerts)


def test_restart_with_offsets_reset_does_not_resend_what_was_delivered(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    hook = receiver()
    service_config.rules = webhook_rules(hook.url)
    alerts = [make_alert(unique_name("user")) for _ in range(5)]
    first = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, alerts)
    assert wait_until(lambda: len(hook.accepted()) == 5)
    assert first.stop() == 0
    # A new group re-reads the topic from the start; the database says all are delivered.
    service_config.group_id = unique_name("alerting-regroup")
    second = start_service()
    marker = make_alert(unique_name("user"))
    produce(service_config.bootstrap, service_config.alerts_topic, [marker])
    assert wait_until(lambda: marker["alert_id"] in hook.deduped())
    assert second.alerts()["total"] == 6
    assert sorted(hook.raw_counts().values()) == [1] * 6


def test_burst_for_one_user_is_folded_into_one_summary_across_a_restart(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    hook = receiver()
    window_s = 15  # must outlast a restart on a busy 2-core machine
    service_config.rules = webhook_rules(hook.url, window_s=window_s)
    user, other = unique_name("user"), unique_name("user")
    opener = make_alert(user, score=0.85)
    first = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, [opener])
    assert wait_until(lambda: opener["alert_id"] in hook.deduped())
    opened_at = time.monotonic()
    assert first.stop() == 0

    burst = [make_alert(user, score=s) for s in (0.9, 0.97, 0.88)]
    bystander = make_alert(other)
    second = start_service()  # the window lives in the database
    produce(service_config.bootstrap, service_config.alerts_topic, [*burst, bystander])
    assert wait_until(lambda: bystander["alert_id"] in hook.deduped())
    elapsed = time.monotonic() - opened_at
    assert elapsed < window_s, f"restart took {elapsed:.1f}s: the window closed before the burst"
    for alert in burst:
        assert wait_until(partial(is_suppressed, second, alert), timeout_s=10), second.log()
    assert {r.key for r in hook.accepted()} == {opener["alert_id"], bystander["alert_id"]}

    summary_key = f"summary-{opener['alert_id']}"
    assert wait_until(lambda: summary_key in hook.deduped(), timeout_s=window_s + 10)
    summary = hook.deduped()[summary_key].body
    assert summary["kind"] == "summary" and summary["user_id"] == user
    assert summary["count"] == 3
    assert summary["max_score"] == 0.97
    assert summary["alert_id"] == burst[-1]["alert_id"]  # one partition per user: in order
    assert len(hook.accepted()) == 3  # opener, bystander, one summary
    metrics = second.http.get("/metrics").text
    assert 'alerting_alerts_suppressed_total{sink="hook"} 3.0' in metrics
    assert 'alerting_alerts_delivered_total{kind="summary",sink="hook"} 1.0' in metrics


def test_alerts_on_old_transactions_are_stored_and_sent_to_no_one(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    """A backfill's alerts: the route takes only transactions of the last hour, so the
    month-old ones are stored for the review page and counted, and only the fresh one
    reaches the webhook."""
    hook = receiver(lambda key, n: 200)
    service_config.rules = webhook_rules(hook.url).replace(
        'name = "all"', 'name = "all"\nmax_age_seconds = 3600'
    )
    service = start_service()
    old = [make_alert(unique_name("user"), event_ts=time.time() - 30 * 86_400) for _ in range(3)]
    fresh = make_alert(unique_name("user"))
    produce(service_config.bootstrap, service_config.alerts_topic, [*old, fresh])

    metrics = f"{service_config.base_url}/metrics"
    assert wait_until(lambda: sample(metrics, "alerting_alerts_unrouted_total") == 3)
    assert wait_until(lambda: set(hook.deduped()) == {fresh["alert_id"]})
    for alert in old:
        detail = service.http.get(f"/alerts/{alert['alert_id']}")
        assert detail.status_code == 200 and detail.json()["deliveries"] == []
    assert states(service, fresh) == ["delivered"]
