"""What tests/test_compose.py reads: docker-compose.yml as Compose sees it (YAML, then
variables from .env), the Dockerfiles it builds, .dockerignore, and where each service
listens inside the compose network. Parsing only; the checks are in test_compose.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values

from launcher.apps import APPS

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV: dict[str, str] = {k: v or "" for k, v in dotenv_values(REPO / ".env").items()}
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $VAR; $$ is a literal $.
VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)
MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmg]?)b?$", re.IGNORECASE)
PUBLISHED = re.compile(r"^127\.0\.0\.1:\$\{(?P<var>\w+)\}:(?P<container>\d+)$")


# --- loading -------------------------------------------------------------------------


def interpolate(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        value = ENV.get(name)
        if m.group("op") in (":-", "-") and (
            value is None or (m.group("op") == ":-" and not value)
        ):
            return m.group("arg")
        if value is None:
            raise KeyError(f"{name} is not in .env and has no default")
        return value

    return VARIABLE.sub(one, text)


def _walk(node: Any, fn: Any) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, fn) for v in node]
    return fn(node) if isinstance(node, str) else node


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


@cache
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@cache
def compose() -> dict[str, Any]:
    """The compose file as Compose sees it: YAML first, then variables from .env."""
    resolved: dict[str, Any] = _walk(raw(), interpolate)
    return resolved


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def tools() -> set[str]:
    """Services only started on demand (`docker compose run`): profile "tools"."""
    return {name for name, svc in services().items() if "tools" in (svc.get("profiles") or [])}


def cluster() -> set[str]:
    """The cluster profile's services (`make up-cluster`): long-running and one-shots
    like the rest, started only when named with --profile cluster."""
    return {name for name, svc in services().items() if "cluster" in (svc.get("profiles") or [])}


def with_dependencies(names: set[str]) -> set[str]:
    """`names` and every service they depend on, transitively (what `up <names>` starts)."""
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(services()[name].get("depends_on") or {})
    return found


def one_shots() -> set[str]:
    """Services that others wait for to finish (service_completed_successfully)."""
    return {
        target
        for svc in services().values()
        for target, dep in (svc.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }


def long_running() -> set[str]:
    return set(services()) - tools() - one_shots()


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# --- Dockerfiles ---------------------------------------------------------------------


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: tuple[tuple[str, str], ...]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        instructions: list[tuple[str, str]] = []
        pending = ""
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#") or not line.strip():
                continue
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            keyword, _, args = pending.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
            pending = ""
        return cls(path, tuple(instructions))

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def final_stage(self, keyword: str) -> list[str]:
        last_from = max(i for i, (kw, _) in enumerate(self.instructions) if kw == "FROM")
        return [args for kw, args in self.instructions[last_from:] if kw == keyword]

    def cmd(self) -> list[str]:
        cmds = self.final_stage("CMD")
        assert cmds, f"{self.path}: no CMD"
        parsed: list[str] = json.loads(cmds[-1])  # exec form: signals reach the process
        return parsed


def dockerfile_of(svc: dict[str, Any]) -> Dockerfile | None:
    build = svc.get("build")
    if build is None:
        return None
    context = REPO / (build if isinstance(build, str) else build.get("context", "."))
    name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return Dockerfile.read(context / name)


def built_dockerfiles() -> dict[Path, Dockerfile]:
    found = {}
    for svc in services().values():
        df = dockerfile_of(svc)
        if df is not None:
            found[df.path] = df
    return found


def image_healthcheck(svc: dict[str, Any]) -> str | None:
    df = dockerfile_of(svc)
    checks = df.final_stage("HEALTHCHECK") if df else []
    return checks[-1] if checks and checks[-1] != "NONE" else None


def has_healthcheck(svc: dict[str, Any]) -> bool:
    check = svc.get("healthcheck") or {}
    if check.get("disable"):
        return False
    return bool(check.get("test")) or image_healthcheck(svc) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token)
        )
    return re.compile(out)


def dockerignored(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


# --- where services listen -----------------------------------------------------------


def listening_ports(name: str) -> set[int]:
    """Ports a service listens on inside the compose network."""
    svc = services()[name]
    env = environment(svc)
    if "KAFKA_ADVERTISED_LISTENERS" in env:  # a broker: kafka, or kafka-<n> of the cluster
        return {
            urlsplit(listener).port or 0
            for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
            if urlsplit(listener).hostname == name
        } | {agent.port for agent in java_agents(env.get("KAFKA_OPTS", ""))}
    if name == "mlflow":
        df = dockerfile_of(svc)
        assert df is not None
        cmd = df.cmd()
        return {int(cmd[cmd.index("--port") + 1])}
    # <name>-cluster: that service in the cluster profile, on the same container port.
    base = name.removesuffix("-cluster")
    if base == "grafana":
        return {int(env["GF_SERVER_HTTP_PORT"])}
    # Images listening on their defaults (no flag overrides them in the command).
    defaults = {"redis": 6379, "prometheus": 9090, "redis-exporter": 9121}
    image = base.rstrip("0123456789").removesuffix("-node-")  # redis-node-<n>: Redis
    if base in defaults or image == "redis":
        assert not any("port" in arg or "listen" in arg for arg in svc.get("command", []))
        return {defaults["redis" if image == "redis" else base]}
    app = next(a for a in APPS if a.name == base)
    return {int(env[app.port_setting.upper()])}


def networks(svc: dict[str, Any]) -> dict[str, list[str]]:
    """The networks a service joins, each with the aliases it takes there."""
    joined = svc.get("networks") or ["default"]
    if isinstance(joined, list):
        return {network: [] for network in joined}
    return {network: list((how or {}).get("aliases", [])) for network, how in joined.items()}


def answering(host: str, network: str) -> set[str]:
    """The services a name resolves to on a network: by service name or alias."""
    return {
        name
        for name, svc in services().items()
        if network in networks(svc) and (name == host or host in networks(svc)[network])
    }


@dataclass(frozen=True)
class JavaAgent:
    """-javaagent:<jar>=[<host>:]<port>:<config>, as the JMX exporter agent reads it."""

    jar: str
    port: int
    config: str


JAVA_AGENT = re.compile(r"-javaagent:(?P<jar>[^=\s]+)=(?:[^:\s]+:)?(?P<port>\d+):(?P<config>\S+)")


def java_agents(jvm_options: str) -> list[JavaAgent]:
    return [
        JavaAgent(m.group("jar"), int(m.group("port")), m.group("config"))
        for m in JAVA_AGENT.finditer(jvm_options)
    ]


def assert_reaches_a_service(address: str, what: str) -> None:
    parts = urlsplit(address if "//" in address else f"//{address}")
    assert parts.hostname in services(), f"{what}: {address} is not a compose service"
    assert parts.port in listening_ports(parts.hostname), (
        f"{what}: {parts.hostname} does not listen on {parts.port} "
        f"(it listens on {sorted(listening_ports(parts.hostname))})"
    )


# --- commands, memory, mounts, the Compose CLI ----------------------------------


def _bytes(limit: str | int) -> int:
    m = MEMORY.match(str(limit))
    assert m, f"unreadable memory limit {limit!r}"
    return int(float(m.group(1)) * 1024 ** "bkmg".index((m.group(2) or "b").lower()))


def memory_limit(svc: dict[str, Any]) -> int:
    limit = svc.get("mem_limit") or (
        svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    )
    return _bytes(limit) if limit else 0


def python_package(svc: dict[str, Any]) -> str | None:
    """The package a service runs with `python -m`, if it runs one of ours."""
    df = dockerfile_of(svc)
    for command in (svc.get("entrypoint"), svc.get("command"), df.cmd() if df else None):
        argv = list(command or [])
        if argv[:2] == ["python", "-m"]:
            return str(argv[2])
    return None


def python_m_targets() -> Iterator[tuple[str, str]]:
    for name, svc in services().items():
        package = python_package(svc)
        if package:
            yield name, package
    for path, df in built_dockerfiles().items():
        if df.cmd()[:2] == ["python", "-m"]:
            yield str(path.relative_to(REPO)), df.cmd()[2]


def bind_mounts() -> Iterator[tuple[str, Path, str]]:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                yield name, REPO / source, target


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None
