"""Settings shared by every service.

Each service defines its own frozen pydantic-settings class on top of these. Values come
from the process environment first, then from the root `.env` (or the file named by
FRAUD_ENV_FILE). A required value has no default: a service missing it fails at start
with a message naming the variable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

S = TypeVar("S", bound=BaseSettings)


def env_file() -> Path | None:
    """The .env file services read: FRAUD_ENV_FILE if set, else the repository's own."""
    explicit = os.environ.get("FRAUD_ENV_FILE")
    if explicit:
        return Path(explicit)
    default = REPO_ROOT / ".env"
    return default if default.exists() else None


class FrozenSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=env_file(), env_file_encoding="utf-8", extra="ignore", frozen=True
    )


class KafkaSettings(FrozenSettings):
    kafka_bootstrap_servers: str

    def client_config(self) -> dict[str, Any]:
        """Base librdkafka config: bootstrap servers plus security pass-through."""
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **kafka_passthrough()}


class TopicSettings(FrozenSettings):
    topic_transactions: str = "transactions"
    topic_scores: str = "scores"
    topic_alerts: str = "alerts"
    topic_labels: str = "labels"
    topic_transactions_dlq: str = "transactions.dlq"
    topic_alerts_dlq: str = "alerts.dlq"
    topic_labels_dlq: str = "labels.dlq"


_PASSTHROUGH_PREFIXES = ("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_")


def kafka_passthrough(environ: dict[str, str] | None = None) -> dict[str, str]:
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_* become security.protocol,
    sasl.*, ssl.* so every service also runs against a managed or secured cluster."""
    env = dict(os.environ if environ is None else environ)
    out: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith(_PASSTHROUGH_PREFIXES):
            out[key[len("KAFKA_") :].lower().replace("_", ".")] = value
    return out


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build a settings object or exit with one line per missing/invalid variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']}")
        sys.stderr.write(f"configuration error in {cls.__name__}:\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None
