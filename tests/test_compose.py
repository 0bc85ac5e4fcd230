"""docker-compose.yml, the Dockerfiles and the files they mount, checked without a
Docker engine: the structure with PyYAML, and the whole file with the Compose CLI's
own validator (`config -q`), which runs client-side.

The checks are cross-checks against the rest of the repository (.env, fraudcore's
topics, the launcher's health paths, prometheus.yml, Grafana provisioning), so the
compose path cannot drift from the local one unnoticed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values
from pydantic_settings import BaseSettings

from fraudcore.settings import TopicSettings
from fraudcore.topics import stack_topics
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


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
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
    """Services only started on demand (`docker compose run`)."""
    return {name for name, svc in services().items() if svc.get("profiles")}


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
    if name == "kafka":
        return {
            urlsplit(listener).port or 0
            for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
            if urlsplit(listener).hostname == "kafka"
        }
    if name == "mlflow":
        df = dockerfile_of(svc)
        assert df is not None
        cmd = df.cmd()
        return {int(cmd[cmd.index("--port") + 1])}
    if name == "grafana":
        return {int(env["GF_SERVER_HTTP_PORT"])}
    # Images listening on their defaults (no flag overrides them in the command).
    defaults = {"redis": 6379, "prometheus": 9090}
    if name in defaults:
        assert not any("port" in arg or "listen" in arg for arg in svc.get("command", []))
        return {defaults[name]}
    app = next(a for a in APPS if a.name == name)
    return {int(env[app.port_setting.upper()])}


def assert_reaches_a_service(address: str, what: str) -> None:
    parts = urlsplit(address if "//" in address else f"//{address}")
    assert parts.hostname in services(), f"{what}: {address} is not a compose service"
    assert parts.port in listening_ports(parts.hostname), (
        f"{what}: {parts.hostname} does not listen on {parts.port} "
        f"(it listens on {sorted(listening_ports(parts.hostname))})"
    )


# --- the tests -----------------------------------------------------------------------


def test_long_running_services_have_a_healthcheck() -> None:
    missing = sorted(n for n in long_running() if not has_healthcheck(services()[n]))
    assert not missing, f"no healthcheck (in compose or in the image): {missing}"


def test_restart_policy_fits_how_a_service_runs() -> None:
    for name, svc in services().items():
        policy = str(svc.get("restart"))
        if name in tools():
            assert policy == "no", f"{name}: on-demand command, must not be retried"
        elif name in one_shots():
            assert re.fullmatch(r"on-failure(:\d+)?", policy), f"{name}: one-shot, got {policy}"
        else:
            assert policy == "unless-stopped", f"{name}: long-running, got {policy}"


def _bytes(limit: str | int) -> int:
    m = MEMORY.match(str(limit))
    assert m, f"unreadable memory limit {limit!r}"
    return int(float(m.group(1)) * 1024 ** "bkmg".index((m.group(2) or "b").lower()))


def memory_limit(svc: dict[str, Any]) -> int:
    limit = svc.get("mem_limit") or (
        svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    )
    return _bytes(limit) if limit else 0


def test_every_service_has_a_memory_limit_and_up_fits_8_gib() -> None:
    limits = {name: memory_limit(svc) for name, svc in services().items()}
    assert all(limits.values()), f"no memory limit: {[n for n, v in limits.items() if not v]}"
    started_by_up = sum(v for n, v in limits.items() if n not in tools())
    assert started_by_up <= 8 * 1024**3, f"`up` may take {started_by_up / 1024**3:.1f} GiB"


def test_depends_on_targets_exist_and_wait_on_a_condition() -> None:
    for name, svc in services().items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions, not a list"
        for target, dep in deps.items():
            assert target in services(), f"{name} depends on unknown service {target}"
            assert target not in tools() or name in tools(), f"{name} needs on-demand {target}"
            condition = dep.get("condition")
            if condition == "service_healthy":
                assert has_healthcheck(services()[target]), f"{target} can never be healthy"
            else:
                assert condition == "service_completed_successfully", f"{name}->{target}"
    # `docker compose up --wait` counts a one-shot's exit as a failure unless a
    # long-running service waits for it to complete.
    for shot in one_shots() - tools():
        adopters = [
            name
            for name in long_running()
            if (services()[name].get("depends_on") or {}).get(shot, {}).get("condition")
            == "service_completed_successfully"
        ]
        assert adopters, f"no long-running service waits for {shot}: `up --wait` would fail"


def test_every_variable_resolves_from_env_or_a_default() -> None:
    unresolved = set()
    for text in _strings(raw()):
        for m in VARIABLE.finditer(text):
            name = m.group("braced") or m.group("bare")
            if name and name not in ENV and m.group("op") not in (":-", "-"):
                unresolved.add(name)
    assert not unresolved, f"not in .env and no default: {sorted(unresolved)}"
    for svc in services().values():
        files = svc.get("env_file") or []
        for env_file in [files] if isinstance(files, str) else files:
            assert (REPO / env_file).is_file(), f"env_file {env_file} is missing"


def test_published_ports_come_from_env_and_reach_the_service() -> None:
    seen: dict[str, str] = {}
    for name, svc in raw()["services"].items():
        for entry in svc.get("ports", []):
            m = PUBLISHED.match(str(entry))
            assert m, f"{name}: {entry!r} must be 127.0.0.1:${{VAR_FROM_ENV}}:<port>"
            var, container = m.group("var"), int(m.group("container"))
            assert var in ENV and 0 < int(ENV[var]) < 65536, f"{name}: {var} not a .env port"
            assert var not in seen, f"{var} published by both {seen.get(var)} and {name}"
            seen[var] = name
            if name == "kafka":
                listeners = environment(services()["kafka"])["KAFKA_LISTENERS"]
                assert f"EXTERNAL://:{container}" in listeners
            else:
                assert container in listening_ports(name), f"{name}: nothing on {container}"


def test_kafka_and_redis_host_ports_agree_with_the_env_addresses() -> None:
    assert urlsplit(f"//{ENV['KAFKA_BOOTSTRAP_SERVERS'].split(',')[0]}").port == int(
        ENV["KAFKA_PORT"]
    )
    assert urlsplit(ENV["REDIS_URL"]).port == int(ENV["REDIS_PORT"])
    advertised = environment(services()["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://localhost:{ENV['KAFKA_PORT']}" in advertised.split(",")


def test_service_addresses_point_at_compose_services() -> None:
    for name, svc in services().items():
        env = environment(svc)
        if "env_file" not in svc:
            continue  # third-party images: none of our addresses
        for var in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "MLFLOW_TRACKING_URI"):
            assert var in env, f"{name}: {var} would be .env's localhost address"
            for address in env[var].split(","):
                assert_reaches_a_service(address, f"{name} {var}")


def test_every_required_setting_of_a_service_is_supplied() -> None:
    """A required setting (no default) must come from .env or the service's environment,
    or the container stops at start with a configuration error."""
    unsupplied = []
    for name, svc in services().items():
        package = python_package(svc)
        if package is None:
            continue
        module = importlib.import_module(f"{package}.settings")
        supplied = set(ENV) | set(raw()["services"][name].get("environment") or {})
        for cls in vars(module).values():
            if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
                continue
            if cls.__module__ != module.__name__:
                continue
            prefix = str(cls.model_config.get("env_prefix") or "")
            for field, info in cls.model_fields.items():
                variable = f"{prefix}{field}".upper()
                if info.is_required() and variable not in supplied:
                    unsupplied.append(f"{name}: {variable} ({cls.__name__})")
    assert not unsupplied, unsupplied


def test_kafka_init_creates_the_topics_of_fraudcore() -> None:
    script = " ".join(services()["kafka-init"]["command"])
    assert "--if-not-exists" in script
    created = {
        m.group(1): (int(m.group(2)), tuple(re.findall(r"--config (\S+)", m.group(3))))
        for m in re.finditer(r"--topic (\S+) --partitions (\d+)((?: --config \S+)*)", script)
    }
    names = {k.lower(): v for k, v in ENV.items() if k.startswith("TOPIC_")}
    expected = {
        spec.name: (spec.partitions, tuple(f"{k}={v}" for k, v in spec.config))
        for spec in stack_topics(TopicSettings(**names), int(ENV["TRANSACTIONS_PARTITIONS"]))
    }
    assert created == expected


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


def test_every_python_m_target_is_a_package_with_main() -> None:
    targets = list(python_m_targets())
    assert {t for _, t in targets} >= {app.name for app in APPS} | {"trainer"}
    for where, module in targets:
        package = REPO / module.replace(".", "/")
        assert (package / "__main__.py").is_file(), f"{where}: no {module}/__main__.py"


def test_dockerfiles_are_slim_non_root_and_copy_what_exists() -> None:
    problems = []  # all of them at once: a missing file must not hide a root user
    for path, df in built_dockerfiles().items():
        where = path.relative_to(REPO)
        stages: set[str] = set()
        for source in df.all("FROM"):
            image, *alias = source.split()
            if image not in stages and image != "python:3.11-slim":
                problems.append(f"{where}: FROM {image}")
            stages.update(alias[-1:])
        if df.final_stage("FROM")[0] != "python:3.11-slim":
            problems.append(f"{where}: final stage is not python:3.11-slim")
        users = df.final_stage("USER")
        if not users or users[-1] in ("root", "0"):
            problems.append(f"{where}: runs as root")
        if not df.final_stage("HEALTHCHECK"):
            problems.append(f"{where}: says nothing about health (HEALTHCHECK or NONE)")
        for copy in df.all("COPY"):
            if "--from=" in copy:
                continue
            for source in [t for t in copy.split() if not t.startswith("--")][:-1]:
                if not (REPO / source).exists():
                    problems.append(f"{where}: COPY {source}: not in the repository")
                if dockerignored(source):
                    problems.append(f"{where}: COPY {source}: excluded by .dockerignore")
    assert not problems, "\n".join(problems)


def test_service_images_install_their_own_package_with_the_pins() -> None:
    deps_stages = set()
    for name in [*(app.name for app in APPS), "trainer"]:
        df = Dockerfile.read(REPO / name / "Dockerfile")
        # Identical up to their own sources, so the dependency layer is built once.
        deps_stages.add(df.instructions[: df.instructions.index(("FROM", "deps AS build"))])
        assert df.cmd()[:3] == ["python", "-m", name]
        assert any("pip install -c constraints.txt ." in run for run in df.all("RUN"))
        copied = {c.split()[0].strip("/") for c in df.all("COPY") if "--from=" not in c}
        assert {"fraudcore", name} <= copied, f"{name}: copies {copied}"
        assert not copied & ({a.name for a in APPS} | {"trainer", "launcher"}) - {name}
    assert len(deps_stages) == 1, "the service Dockerfiles' deps stages differ"


def test_images_get_every_data_file_of_their_packages() -> None:
    """Images install the packages for real (not editable): a data file that pyproject's
    package-data does not match is silently missing in the container."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    missing = [
        str(path.relative_to(REPO))
        for package in ("fraudcore", "trainer", *(app.name for app in APPS))
        for path in (REPO / package).rglob("*")
        if path.is_file()
        and path.suffix not in (".py", ".pyc", ".md")
        and path.name != "Dockerfile"
        and not path.name.startswith(".")
        and "__pycache__" not in path.parts
        and not any(fnmatch(path.name, pattern) for pattern in patterns)
    ]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_app_healthchecks_probe_what_the_launcher_probes() -> None:
    for app in APPS:
        check = image_healthcheck(services()[app.name])
        assert check, f"{app.name}: image has no HEALTHCHECK"
        m = re.search(r"\$\{(\w+):-(\d+)\}(/[^\"\s]*)", check)
        assert m, f"{app.name}: health URL should read its port variable: {check}"
        assert m.group(1) == app.port_setting.upper()
        assert m.group(3) == app.health_path
        assert int(m.group(2)) in listening_ports(app.name)


def bind_mounts() -> Iterator[tuple[str, Path, str]]:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                yield name, REPO / source, target


def test_mounted_paths_exist_and_named_volumes_are_declared() -> None:
    for name, path, _ in bind_mounts():
        assert path.exists(), f"{name} mounts {path.relative_to(REPO)}, which is missing"
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_prometheus_scrapes_services_where_they_listen() -> None:
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    mounted = {t: s for n, s, t in bind_mounts() if n == "prometheus"}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert_reaches_a_service(target, f"prometheus job {job['job_name']}")
    for pattern in config.get("rule_files") or []:
        folder = str(Path("/etc/prometheus", pattern).parent)
        assert folder in mounted, f"rule_files {pattern}: {folder} is not mounted"


def test_grafana_provisioning_matches_the_stack() -> None:
    provisioning = REPO / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert_reaches_a_service(source["url"], "grafana datasource")
    mounts = {t: s for n, s, t in bind_mounts() if n == "grafana"}
    assert mounts["/etc/grafana/provisioning"] == provisioning
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())[
        "providers"
    ]
    assert mounts[provider["options"]["path"]] == REPO / "grafana" / "dashboards"


def test_mlflow_folder_holds_no_python_module() -> None:
    modules = sorted(str(p.relative_to(REPO)) for p in (REPO / "mlflow").rglob("*.py"))
    assert not modules, f"these would shadow the mlflow package: {modules}"
    spec = importlib.util.find_spec("mlflow")
    assert spec and spec.origin and not Path(spec.origin).is_relative_to(REPO / "mlflow")


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_cli_accepts_the_file() -> None:
    cli = compose_cli()
    if cli is None:
        message = (
            "no Compose CLI: install the docker compose plugin, or Debian's docker-compose "
            "(apt-get install --no-install-recommends docker-compose)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Interpolation must see .env alone, as on a clean machine: drop any variable of the
    # same name from this process's environment, and COMPOSE_* overrides.
    env = {k: v for k, v in os.environ.items() if k not in ENV and not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "--profile", "tools",
         "config", "-q"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
