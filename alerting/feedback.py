"""Analyst verdicts -> labels (labels.v1.json, topic labels, key transaction_id)."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from fraudcore.contracts import ContractError, format_time, validate

PUBLISH_TIMEOUT_S = 10.0


class PublishError(RuntimeError):
    """Kafka did not confirm the label."""


def build_label(
    alert: dict[str, Any], event_ts: float, verdict: str, note: str | None, now: float
) -> dict[str, Any]:
    """The label for a reviewed alert; ContractError if it would break labels.v1."""
    merchant = alert.get("transaction", {}).get("merchant_id")
    if not merchant:
        raise ContractError(
            "missing_field", "the alert's transaction has no merchant_id", "transaction.merchant_id"
        )
    label: dict[str, Any] = {
        "schema_version": 1,
        "transaction_id": alert["transaction_id"],
        "user_id": alert["user_id"],
        "merchant_id": merchant,
        "label": verdict,
        "source": "analyst",
        "available_at": format_time(now),
        "transaction_time": format_time(event_ts),
        "alert_id": alert["alert_id"],
    }
    if note:
        label["note"] = note
    validate("labels", label)
    return label


class LabelPublisher:
    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def publish(self, label: dict[str, Any]) -> None:
        """Send one label and wait until Kafka acknowledges it (acks=all)."""
        done = threading.Event()
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)
            done.set()

        self.producer.produce(
            self.topic,
            key=str(label["transaction_id"]).encode("utf-8"),
            value=orjson.dumps(label),
            on_delivery=on_delivery,
        )
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        while not done.is_set() and time.monotonic() < deadline:
            # Another thread may serve the callback; either way `done` gets set.
            self.producer.poll(0.05)
        if not done.is_set():
            raise PublishError(
                f"no acknowledgement from topic {self.topic} in {PUBLISH_TIMEOUT_S}s"
            )
        if errors:
            raise PublishError(f"topic {self.topic} refused the label: {errors[0].str()}")
