"""The routing config file: sinks, routes by severity and score, delivery and suppression.

TOML (.toml, read with the standard library) or YAML (.yaml/.yml, needs PyYAML), chosen
by the file's suffix. `${NAME}` anywhere in a
string is replaced by the environment variable NAME, so webhook URLs and tokens stay out
of the file. Every mistake is reported with the field it is in.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Severity = Literal["low", "medium", "high", "critical"]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RulesError(ValueError):
    """The config file is missing, unreadable or wrong; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSinkConfig(_Strict):
    type: Literal["log"]


class WebhookSinkConfig(_Strict):
    type: Literal["webhook", "slack"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(default=None, gt=0)


SinkConfig = Annotated[LogSinkConfig | WebhookSinkConfig, Field(discriminator="type")]


class Route(_Strict):
    name: str
    severity: list[Severity] | None = None  # None: any severity
    min_score: float = Field(default=0.0, ge=0, le=1)
    max_score: float = Field(default=1.0, ge=0, le=1)
    # Only alerts on transactions at most this old (seconds) match: the old alerts of a
    # backfill or a replay are stored for the review page, not sent to people.
    max_age_seconds: float | None = Field(default=None, gt=0)
    sinks: list[str] = Field(min_length=1)
    # Like Alertmanager: the first matching route wins unless it says to continue.
    continue_: bool = Field(default=False, alias="continue")

    def matches(self, severity: str, score: float, age_s: float = 0.0) -> bool:
        if self.severity is not None and severity not in self.severity:
            return False
        if self.max_age_seconds is not None and age_s > self.max_age_seconds:
            return False
        return self.min_score <= score <= self.max_score


class DeliveryPolicy(_Strict):
    max_attempts: int = Field(default=5, ge=1, le=50)
    timeout_seconds: float = Field(default=5.0, gt=0)
    backoff_initial_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=30.0, ge=0)
    workers: int = Field(default=8, ge=1, le=128)


class SuppressionPolicy(_Strict):
    # 0 turns suppression off: every alert is notified on its own.
    window_seconds: float = Field(default=300.0, ge=0)


class Rules(_Strict):
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    suppression: SuppressionPolicy = Field(default_factory=SuppressionPolicy)
    sinks: dict[str, SinkConfig] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _routes_name_known_sinks(self) -> Rules:
        for i, route in enumerate(self.routes):
            for sink in route.sinks:
                if sink not in self.sinks:
                    raise ValueError(
                        f"routes.{i}.sinks: unknown sink {sink!r} "
                        f"(defined: {', '.join(sorted(self.sinks))})"
                    )
        return self

    def route(self, severity: str, score: float, age_s: float = 0.0) -> list[str]:
        """The sinks an alert goes to, in config order, each once; `age_s` is how long
        ago its transaction happened."""
        chosen: dict[str, None] = {}
        for route in self.routes:
            if route.matches(severity, score, age_s):
                chosen.update(dict.fromkeys(route.sinks))
                if not route.continue_:
                    break
        return list(chosen)


def expand_env(value: Any, environ: Mapping[str, str], where: str = "") -> Any:
    """Replace ${NAME} in every string of a parsed config; an unset NAME is an error."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise RulesError(f"{where or '<root>'}: environment variable {name} is not set")
            return environ[name]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, environ, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, environ, f"{where}.{i}") for i, v in enumerate(value)]
    return value


def parse_rules(data: Any, environ: Mapping[str, str] | None = None) -> Rules:
    expanded = expand_env(data, os.environ if environ is None else environ)
    try:
        return Rules.model_validate(expanded)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            problems.append(f"{field or '<root>'}: {err['msg']}")
        raise RulesError("; ".join(problems)) from None


def load_rules(path: Path, environ: Mapping[str, str] | None = None) -> Rules:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
    try:
        data = _parse_yaml(text) if path.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (ValueError, ImportError) as exc:  # TOMLDecodeError and YAMLError are ValueErrors
        raise RulesError(f"{path} does not parse: {exc}") from None
    try:
        return parse_rules(data, environ)
    except RulesError as exc:
        raise RulesError(f"{path}: {exc}") from None


def _parse_yaml(text: str) -> Any:
    # Imported here so the service's runtime needs PyYAML only when a YAML file is used.
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
