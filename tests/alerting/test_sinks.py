"""HTTP sinks against a real local receiver: retries with backoff, the same
Idempotency-Key on every attempt, no retry of a 4xx, giving up after max_attempts,
stopping a retry wait on shutdown; payload shapes of the webhook and Slack sinks."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from alerting.rules import DeliveryPolicy, WebhookSinkConfig
from alerting.sinks import HttpSink, Notification, backoff_delay, slack_body, webhook_body
from tests.alerting.helpers import Receiver, make_alert

FAST = DeliveryPolicy(
    max_attempts=4, timeout_seconds=0.3, backoff_initial_seconds=0.02, backoff_max_seconds=0.1
)


def sink_for(hook: Receiver, policy: DeliveryPolicy = FAST) -> HttpSink:
    config = WebhookSinkConfig(type="webhook", url=hook.url, headers={"X-Team": "fraud"})
    return HttpSink("hook", config, policy, webhook_body, random.Random(7))


def note(user: str = "u-1") -> Notification:
    alert = make_alert(user)
    return Notification("alert", alert, alert["alert_id"])


@pytest.mark.parametrize(
    ("answers", "ok", "attempts", "error"),
    [
        ([200], True, 1, None),
        ([500, 503, 200], True, 3, None),
        ([("sleep", 0.6, 200), 200], True, 2, None),  # first attempt times out
        ([429, 200], True, 2, None),
        ([400], False, 1, "HTTP 400"),
        ([404], False, 1, "HTTP 404"),
        ([500, 500, 500, 502], False, 4, "HTTP 502"),
    ],
)
def test_retries_and_outcomes(
    receiver: Callable[..., Receiver],
    answers: list[Any],
    ok: bool,
    attempts: int,
    error: str | None,
) -> None:
    hook = receiver(lambda _key, n: answers[n - 1])
    sink = sink_for(hook)
    message = note()
    outcome = sink.send(message, threading.Event())
    sink.close()
    assert (outcome.ok, outcome.attempts) == (ok, attempts)
    if error:
        assert outcome.error and outcome.error.startswith(error)
    assert hook.arrivals[message.alert_id] == attempts
    assert {r.key for r in hook.requests} <= {message.alert_id}  # same key on every attempt


def test_body_and_headers_of_the_generic_webhook(receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    message = note("u-42")
    assert sink_for(hook).send(message, threading.Event()).ok
    [request] = hook.requests
    assert request.body["kind"] == "alert" and request.body["count"] == 1
    assert request.body["alert"] == message.alert
    assert (request.body["user_id"], request.body["alert_id"]) == ("u-42", message.alert_id)


def test_shutdown_interrupts_a_retry_wait(receiver: Callable[..., Receiver]) -> None:
    hook = receiver(lambda _key, _n: 503)
    slow = DeliveryPolicy(max_attempts=5, backoff_initial_seconds=30, backoff_max_seconds=30)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    outcome = sink_for(hook, slow).send(note(), stop)
    assert outcome.interrupted and not outcome.ok and outcome.attempts == 1
    assert time.monotonic() - started < 10  # not the 30 s backoff


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = DeliveryPolicy(backoff_initial_seconds=0.5, backoff_max_seconds=4.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 4.0)]:
        delays = {backoff_delay(attempt, policy, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


def test_slack_payload_has_text_blocks_and_escapes() -> None:
    alert = make_alert("u<script>&", severity="critical", score=0.97)
    body = slack_body(Notification("alert", alert, alert["alert_id"]))
    assert body["text"].startswith("CRITICAL fraud alert for user u&lt;script&gt;&amp;")
    assert "<script>" not in str(body)
    sections = [b for b in body["blocks"] if b["type"] == "section"]
    assert any(alert["reasons"][0]["text"] in str(s) for s in sections)
    summary = slack_body(Notification("summary", alert, "k", count=5, max_score=0.99))
    assert summary["text"].startswith("5 more fraud alerts for user") and "0.99" in summary["text"]
