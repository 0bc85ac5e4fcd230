"""Wiring: start-up waits, the HTTP server thread, the consumer loop, clean shutdown.

The consumer loop runs in the main thread (it owns signal handling: SIGTERM/SIGINT set
the stop event); uvicorn serves the API from a second thread and is told to exit once
the loop has finished its batch.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import uvicorn
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI

from alerting.api import create_app
from alerting.consumer import AlertConsumer
from alerting.delivery import Dispatcher
from alerting.dlq import DeadLetters
from alerting.feedback import LabelPublisher
from alerting.rules import Rules
from alerting.settings import AlertingSettings
from alerting.sinks import build_sinks
from alerting.store import AlertStore
from fraudcore.dead_letter import dead_letter_limit
from fraudcore.kafka import producer_config, wait_for_kafka
from fraudcore.logs import kv

logger = logging.getLogger(__name__)

HTTP_START_TIMEOUT_S = 15.0


def wait_for_topics(config: dict[str, Any], topics: list[str], timeout_s: float) -> None:
    """Block until every topic exists (they are created by `make up`/the launcher)."""
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    while True:
        existing = admin.list_topics(timeout=5.0).topics
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics still missing after {timeout_s:.0f}s: {', '.join(missing)}")
        logger.info("waiting for topics %s", kv(missing=",".join(missing)))
        time.sleep(1.0)


class HttpServer:
    """uvicorn in a background thread, stopped on request."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.address = f"{host}:{port}"
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + HTTP_START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server did not start on {self.address}")
            time.sleep(0.05)
        logger.info("http listening %s", kv(address=self.address))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10.0)


def _kafka_ok(producer: Producer) -> bool:
    try:
        producer.list_topics(timeout=2.0)
        return True
    except KafkaException:
        return False


def run(settings: AlertingSettings, rules: Rules) -> None:
    base = settings.client_config()
    timeout = settings.alerting_startup_timeout_s
    wait_for_kafka(base, timeout)
    wait_for_topics(
        base, [settings.topic_alerts, settings.topic_alerts_dlq, settings.topic_labels], timeout
    )
    store = AlertStore.connect(settings.alerts_database_url, timeout)
    # Dead letters and labels are few: send them at once rather than batch them.
    producer = Producer(producer_config(base, **{"linger.ms": 1}))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("stopping %s", kv(signal=signal.Signals(signum).name))
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    dlq_limit = dead_letter_limit(AdminClient(base), settings.topic_alerts_dlq)
    dead_letters = DeadLetters(producer, settings.topic_alerts_dlq, dlq_limit)
    dispatcher = Dispatcher(store, rules, build_sinks(rules), dead_letters, stop)
    app = create_app(
        store,
        LabelPublisher(producer, settings.topic_labels),
        settings.alerting_api_key.get_secret_value(),
        kafka_ok=lambda: _kafka_ok(producer),
    )
    http = HttpServer(app, settings.alerting_http_host, settings.alerting_http_port)
    try:
        http.start()
        AlertConsumer(settings, store, dispatcher, dispatcher.dead_letters, stop).run()
    finally:
        stop.set()
        http.stop()
        dispatcher.close()
        producer.flush(10.0)
        store.close()
        logger.info("stopped")
