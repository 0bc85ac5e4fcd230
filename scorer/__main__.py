"""`python -m scorer`: run the scorer service (see scorer/README section in README.md)."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
from types import FrameType

import uvicorn

from fraudcore.logs import kv, setup_logging
from fraudcore.settings import load_settings
from scorer.api import create_app
from scorer.labels import LabelFolder
from scorer.service import EXIT_FATAL, Scorer
from scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scorer",
        description=(
            "Consume transactions, compute point-in-time features in Redis, score with the "
            "MLflow champion model, and write scores and explained alerts exactly once. "
            "Configured by environment variables / the root .env: KAFKA_BOOTSTRAP_SERVERS, "
            "REDIS_URL, MLFLOW_TRACKING_URI, MODEL_NAME, SCORER_HTTP_PORT, TOPIC_*, and the "
            "SCORER_* tuning knobs (batch size and wait, instance id, outage limit...)."
        ),
    )
    parser.add_argument("--http-host", default="127.0.0.1", help="address of the HTTP API")
    parser.add_argument("--no-labels", action="store_true", help="do not fold the labels topic")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging("scorer")
    # kill -USR1 <pid> prints every thread's stack (a stuck call shows where it waits).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    settings = load_settings(ScorerSettings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping %s", kv(signal=signal.Signals(signum).name))
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    scorer = Scorer(settings, stop)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(scorer),
            host=args.http_host,
            port=settings.scorer_http_port,
            log_level="warning",
        )
    )
    api = threading.Thread(target=server.run, name="http", daemon=True)
    api.start()
    logger.info("http api %s", kv(host=args.http_host, port=settings.scorer_http_port))
    try:
        scorer.connect()
    except TimeoutError as exc:
        logger.error("dependency never came up %s", kv(error=exc))
        return 1
    folder: LabelFolder | None = None
    if not args.no_labels:
        assert scorer.store is not None
        folder = LabelFolder(settings, scorer.store, stop)
        folder.start()
        folder.wait_caught_up(settings.scorer_labels_catch_up_s)
    try:
        code = scorer.run()
    finally:
        stop.set()
        server.should_exit = True
        if folder is not None:
            # Its consumer must leave the group, or the group waits for its session to expire.
            folder.thread.join(timeout=10)
        api.join(timeout=5)
    if folder is not None and folder.failed is not None:
        logger.error("exiting: the label folder failed %s", kv(error=folder.failed))
        return code or EXIT_FATAL
    return code


if __name__ == "__main__":
    sys.exit(main())
