"""Where notifications go: the log, a generic JSON webhook, a Slack-compatible webhook.

HTTP sinks retry with exponential backoff and jitter and send the same Idempotency-Key on
every attempt (and after a restart), so a receiver that honours it sees each notification
once even though delivery is at-least-once.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import orjson

from alerting.metrics import RETRIES
from alerting.rules import DeliveryPolicy, Rules, WebhookSinkConfig
from fraudcore.contracts import format_time
from fraudcore.logs import kv

logger = logging.getLogger(__name__)

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Notification:
    """One message to a sink: a single alert, or the summary of a suppression window."""

    kind: Literal["alert", "summary"]
    alert: dict[str, Any]  # for a summary: the last alert folded into the window
    idempotency_key: str
    count: int = 1
    window: tuple[float, float] | None = None
    max_score: float | None = None

    @property
    def alert_id(self) -> str:
        return str(self.alert["alert_id"])


@dataclass(frozen=True)
class Outcome:
    ok: bool
    attempts: int
    error: str | None = None
    # Shutdown began while waiting to retry: neither delivered nor failed, so the alert is
    # left for the next run (its offset is not committed).
    interrupted: bool = False


class Sink(Protocol):
    name: str

    def send(self, note: Notification, stop: threading.Event) -> Outcome: ...

    def close(self) -> None: ...


class LogSink:
    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, note: Notification, stop: threading.Event) -> Outcome:
        a = note.alert
        logger.warning(
            "fraud %s %s",
            note.kind,
            kv(
                sink=self.name,
                alert_id=a["alert_id"],
                user_id=a["user_id"],
                severity=a["severity"],
                score=a["score"],
                count=note.count,
                reasons="; ".join(r["text"] for r in a["reasons"]),
            ),
        )
        return Outcome(ok=True, attempts=1)

    def close(self) -> None:
        pass


def backoff_delay(attempt: int, policy: DeliveryPolicy, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries of
    many alerts spread out but never fire immediately."""
    ceiling = min(policy.backoff_max_seconds, policy.backoff_initial_seconds * 2 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class HttpSink:
    def __init__(
        self,
        name: str,
        config: WebhookSinkConfig,
        policy: DeliveryPolicy,
        body: Callable[[Notification], dict[str, Any]],
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.url = config.url
        self.policy = policy
        self.body = body
        self.rng = rng or random.Random()
        timeout = config.timeout_seconds or policy.timeout_seconds
        self.client = httpx.Client(
            timeout=timeout,
            headers={"Content-Type": "application/json", **config.headers},
            limits=httpx.Limits(max_connections=policy.workers),
        )

    def send(self, note: Notification, stop: threading.Event) -> Outcome:
        content = orjson.dumps(self.body(note))
        headers = {"Idempotency-Key": note.idempotency_key}
        error = "not attempted"
        for attempt in range(1, self.policy.max_attempts + 1):
            wait_at_least = 0.0
            try:
                response = self.client.post(self.url, content=content, headers=headers)
            except httpx.TimeoutException as exc:
                error = f"timeout: {type(exc).__name__}"
            except httpx.TransportError as exc:
                error = f"transport: {type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return Outcome(ok=True, attempts=attempt)
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRIABLE_STATUS:
                    # A 4xx will not get better by asking again.
                    return Outcome(ok=False, attempts=attempt, error=error)
                wait_at_least = min(_retry_after(response) or 0.0, self.policy.backoff_max_seconds)
            if attempt == self.policy.max_attempts:
                break
            RETRIES.labels(self.name).inc()
            delay = max(wait_at_least, backoff_delay(attempt, self.policy, self.rng))
            logger.info(
                "delivery retry %s",
                kv(
                    sink=self.name,
                    key=note.idempotency_key,
                    attempt=attempt,
                    error=error,
                    delay_s=round(delay, 3),
                ),
            )
            if stop.wait(delay):
                return Outcome(ok=False, attempts=attempt, error=error, interrupted=True)
        return Outcome(ok=False, attempts=self.policy.max_attempts, error=error)

    def close(self) -> None:
        self.client.close()


def webhook_body(note: Notification) -> dict[str, Any]:
    a = note.alert
    body: dict[str, Any] = {
        "kind": note.kind,
        "alert_id": a["alert_id"],
        "user_id": a["user_id"],
        "severity": a["severity"],
        "score": a["score"],
        "count": note.count,
        "alert": a,
    }
    if note.window is not None:
        body["window"] = {"start": format_time(note.window[0]), "end": format_time(note.window[1])}
        body["max_score"] = note.max_score
    return body


def _slack_escape(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(note: Notification) -> dict[str, Any]:
    """Slack incoming-webhook payload: `text` is the fallback, `blocks` the layout."""
    a = note.alert
    user = _slack_escape(a["user_id"])
    tx = a.get("transaction", {})
    amount = f"{tx.get('amount', '?')} {tx.get('currency', '')}".strip()
    if note.kind == "summary":
        text = (
            f"{note.count} more fraud alerts for user {user} "
            f"(highest score {note.max_score or a['score']:.2f}); latest below"
        )
    else:
        text = (
            f"{a['severity'].upper()} fraud alert for user {user}: score {a['score']:.2f} "
            f"(threshold {a['threshold']:.2f}), {_slack_escape(amount)}"
        )
    reasons = "\n".join(f"• {_slack_escape(r['text'])}" for r in a["reasons"])
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Severity*\n{a['severity']}"},
                    {"type": "mrkdwn", "text": f"*Score*\n{a['score']:.3f}"},
                    {
                        "type": "mrkdwn",
                        "text": f"*Transaction*\n{_slack_escape(a['transaction_id'])}",
                    },
                    {"type": "mrkdwn", "text": f"*Amount*\n{_slack_escape(amount)}"},
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Why*\n{reasons}"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"alert {_slack_escape(a['alert_id'])} · model "
                        f"{_slack_escape(a['model_name'])} v{_slack_escape(a['model_version'])}",
                    }
                ],
            },
        ],
    }


def build_sinks(rules: Rules) -> dict[str, Sink]:
    sinks: dict[str, Sink] = {}
    for name, config in rules.sinks.items():
        if isinstance(config, WebhookSinkConfig):
            body = slack_body if config.type == "slack" else webhook_body
            sinks[name] = HttpSink(name, config, rules.delivery, body)
        else:
            sinks[name] = LogSink(name)
    return sinks
