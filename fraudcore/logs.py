"""key=value logging for every service: one line per event, greppable and parseable."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


def kv(**fields: Any) -> str:
    """Render context as key=value pairs; values with spaces are quoted."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def where(topic: str, partition: int, offset: int) -> str:
    """The position of a message, as topic[partition]@offset."""
    return f"{topic}[{partition}]@{offset}"


def setup_logging(service: str, level: str | None = None) -> None:
    level_name = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"ts=%(asctime)s level=%(levelname)s service={service} logger=%(name)s %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    # Third-party chatter stays at WARNING unless asked for.
    for noisy in ("urllib3", "httpx", "mlflow", "alembic", "git"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
