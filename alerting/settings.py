"""Settings of the alerting service (environment first, then the root .env)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from fraudcore.settings import KafkaSettings, TopicSettings

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.toml")


class AlertingSettings(KafkaSettings, TopicSettings):
    alerting_http_port: int
    # Deliberately no default: a service must never come up with a guessable write key.
    alerting_api_key: SecretStr
    alerting_http_host: str = "0.0.0.0"
    # Embedded SQLite unless ALERTS_DATABASE_URL names another database (e.g. PostgreSQL).
    alerts_database_url: str = "sqlite:///.run/stack/alerts.db"
    alerting_group_id: str = "alerting"
    alerting_rules_file: Path = DEFAULT_RULES_FILE
    alerting_batch_size: int = Field(default=100, ge=1, le=10_000)
    # A killed instance's partitions move on after this (librdkafka's default is 45 s).
    alerting_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    # A batch waits for its retries when a sink is down; stay in the group meanwhile.
    alerting_max_poll_interval_ms: int = Field(default=1_800_000, ge=10_000)
    alerting_poll_timeout_s: float = Field(default=0.5, gt=0)
    alerting_startup_timeout_s: float = Field(default=60.0, gt=0)
    # A dependency (Kafka, the database) unreachable for this long ends the process
    # non-zero, so a supervisor restarts it rather than it idling forever.
    alerting_dependency_timeout_s: float = Field(default=120.0, gt=0)

    @field_validator("alerting_api_key")
    @classmethod
    def _key_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty; set it to the key analysts send as X-API-Key")
        return value
