"""docker-compose.yml, the Dockerfiles and the files they mount, checked without a
Docker engine: the structure with PyYAML, and the whole file with the Compose CLI's
own validator (`config -q`), which runs client-side.

The checks are cross-checks against the rest of the repository (.env, fraudcore's
topics, the launcher's health paths, prometheus.yml, Grafana provisioning), so the
compose path cannot drift from the local one unnoticed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from fraudcore.settings import TopicSettings
from fraudcore.topics import stack_topics
from launcher import kafka
from launcher.apps import APPS, BOOTSTRAP, WORLD, WORLD_CARDS
from tests.compose_files import (
    COMPOSE_FILE,
    ENV,
    PUBLISHED,
    REPO,
    VARIABLE,
    Dockerfile,
    answering,
    assert_reaches_a_service,
    bind_mounts,
    built_dockerfiles,
    cluster,
    compose,
    compose_cli,
    dockerignored,
    environment,
    has_healthcheck,
    image_healthcheck,
    java_agents,
    listening_ports,
    long_running,
    memory_limit,
    networks,
    one_shots,
    python_m_targets,
    python_package,
    raw,
    services,
    strings,
    tools,
    with_dependencies,
)


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


def _peak_memory(started: set[str]) -> int:
    """A one-shot runs before the services that wait for its success start; the peak is
    the larger of all long-running services and any one-shot beside those not waiting."""
    limits = {name: memory_limit(svc) for name, svc in services().items()}
    running = long_running() & started
    peak = sum(limits[n] for n in running)
    for shot in one_shots() & started:
        waiting = {n for n in running if shot in (services()[n].get("depends_on") or {})}
        peak = max(peak, limits[shot] + sum(limits[n] for n in running - waiting))
    return peak


def test_every_service_has_a_memory_limit_and_up_fits_8_gib() -> None:
    limits = {name: memory_limit(svc) for name, svc in services().items()}
    assert all(limits.values()), f"no memory limit: {[n for n, v in limits.items() if not v]}"
    peak = _peak_memory(set(services()) - tools() - cluster())
    assert peak <= 8 * 1024**3, f"`up` may take {peak / 1024**3:.1f} GiB"


def test_the_cluster_profile_fits_12_gib_and_is_what_make_starts() -> None:
    """`make up-cluster` names the cluster services; with what they depend on (mlflow, the
    agent's one-shot) that is the profile, which must fit the 24 GB machine with room."""
    makefile = (REPO / "Makefile").read_text()
    m = re.search(r"^CLUSTER_SERVICES := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert m, "Makefile: no CLUSTER_SERVICES"
    named = set(m.group(1).replace("\\", " ").split())
    assert named <= cluster(), f"not in profile cluster: {sorted(named - cluster())}"
    started = with_dependencies(named)
    assert cluster() <= started, f"never started: {sorted(cluster() - started)}"
    assert not started & {"kafka", "redis", "scorer"}, sorted(started)
    peak = _peak_memory(started)
    assert peak <= 12 * 1024**3, f"the cluster profile may take {peak / 1024**3:.1f} GiB"


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
    for text in strings(raw()):
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
            if "KAFKA_LISTENERS" in environment(services()[name]):  # kafka, kafka-<n>
                env = environment(services()[name])
                agents = {agent.port for agent in java_agents(env["KAFKA_OPTS"])}
                assert f"EXTERNAL://:{container}" in env["KAFKA_LISTENERS"] or container in agents
            else:
                assert container in listening_ports(name), f"{name}: nothing on {container}"


def test_kafka_and_redis_host_ports_agree_with_the_env_addresses() -> None:
    assert urlsplit(f"//{ENV['KAFKA_BOOTSTRAP_SERVERS'].split(',')[0]}").port == int(
        ENV["KAFKA_PORT"]
    )
    assert urlsplit(ENV["REDIS_URL"]).port == int(ENV["REDIS_PORT"])
    advertised = environment(services()["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://localhost:{ENV['KAFKA_PORT']}" in advertised.split(",")


def test_cluster_brokers_are_published_on_the_cluster_bootstrap_ports() -> None:
    bootstrap = ENV["CLUSTER_KAFKA_BOOTSTRAP_SERVERS"].split(",")
    for n, address in enumerate(bootstrap, 1):
        port = ENV[f"CLUSTER_KAFKA_{n}_PORT"]
        assert urlsplit(f"//{address}").port == int(port)
        advertised = environment(services()[f"kafka-{n}"])["KAFKA_ADVERTISED_LISTENERS"]
        assert f"EXTERNAL://localhost:{port}" in advertised.split(",")
    voters = {environment(services()[f"kafka-{n}"])["KAFKA_CONTROLLER_QUORUM_VOTERS"]
              for n in range(1, len(bootstrap) + 1)}  # fmt: skip
    assert voters == {",".join(f"{n}@kafka-{n}:9093" for n in range(1, len(bootstrap) + 1))}


def test_kafka_loads_the_launchers_jmx_exporter_agent() -> None:
    """The same agent jar, verified, and the same exporter config as the launcher's broker."""
    (agent,) = java_agents(environment(services()["kafka"])["KAFKA_OPTS"])
    jar = kafka.fetch_jmx_agent()  # make install has it; the compose file pins its digest
    assert Path(agent.jar).name == jar.name
    provider = services()["kafka-jmx-agent"]
    (volume,) = [v for v in provider["volumes"] if v.split(":")[1] == str(Path(agent.jar).parent)]
    assert f"{volume}:ro" in services()["kafka"]["volumes"]
    script = provider["command"][0]
    assert hashlib.sha256(jar.read_bytes()).hexdigest() in script
    assert f"/{kafka.JMX_EXPORTER_VERSION}/{jar.name}" in script
    mounted = {target: source for name, source, target in bind_mounts() if name == "kafka"}
    assert mounted[agent.config] == kafka.JMX_EXPORTER_CONFIG


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


def test_every_python_m_target_is_a_package_with_main() -> None:
    targets = list(python_m_targets())
    assert {t for _, t in targets} >= {app.package for app in APPS} | {"trainer"}
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
    for name in {*(app.package for app in APPS), "trainer"}:
        df = Dockerfile.read(REPO / name / "Dockerfile")
        # Identical up to their own sources, so the dependency layer is built once.
        deps_stages.add(df.instructions[: df.instructions.index(("FROM", "deps AS build"))])
        assert df.cmd()[:3] == ["python", "-m", name]
        assert any("pip install -c constraints.txt ." in run for run in df.all("RUN"))
        copied = {c.split()[0].strip("/") for c in df.all("COPY") if "--from=" not in c}
        assert {"fraudcore", name} <= copied, f"{name}: copies {copied}"
        assert not copied & ({a.package for a in APPS} | {"trainer", "launcher"}) - {name}
    assert len(deps_stages) == 1, "the service Dockerfiles' deps stages differ"


def test_images_get_every_data_file_of_their_packages() -> None:
    """Images install the packages for real (not editable): a data file that pyproject's
    package-data does not match is silently missing in the container."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    missing = [
        str(path.relative_to(REPO))
        for package in {"fraudcore", "trainer", *(app.package for app in APPS)}
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


def test_compose_runs_the_launchers_world_and_bootstrap() -> None:
    """The same simulated world and first model with or without Docker."""
    assert services()["producer"]["command"] == ["python", "-m", "producer", *WORLD]
    assert services()["trainer-bootstrap"]["command"] == ["python", "-m", *BOOTSTRAP]
    for app in APPS:
        if "command" in services()[app.name]:
            command = ["python", "-m", app.package, *app.arguments(WORLD_CARDS)]
            assert services()[app.name]["command"] == command


def test_mounted_paths_exist_and_named_volumes_are_declared() -> None:
    for name, path, _ in bind_mounts():
        assert path.exists(), f"{name} mounts {path.relative_to(REPO)}, which is missing"
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"


def _scraped() -> list[tuple[str, str, bool]]:
    """(job, host:port, discovered): prometheus.yml's targets; a discovered name may
    resolve to several services, a static target must resolve to one."""
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    found = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            found += [(job["job_name"], target, False) for target in static["targets"]]
        for dns in job.get("dns_sd_configs", []):
            found += [(job["job_name"], f"{n}:{dns['port']}", True) for n in dns["names"]]
    return found


def test_prometheus_scrapes_services_where_they_listen() -> None:
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    for job, target, _ in _scraped():
        assert_reaches_a_service(target, f"prometheus job {job}")
    for name in ("prometheus", "prometheus-cluster"):
        mounted = {t: s for n, s, t in bind_mounts() if n == name}
        for pattern in config.get("rule_files") or []:
            folder = str(Path("/etc/prometheus", pattern).parent)
            assert folder in mounted, f"{name}: rule_files {pattern}: {folder} is not mounted"


@pytest.mark.parametrize(("network", "prometheus"), [("default", "prometheus"),
                                                      ("cluster", "prometheus-cluster")])  # fmt: skip
def test_each_profiles_prometheus_finds_its_own_services(network: str, prometheus: str) -> None:
    """One prometheus.yml for both profiles: on the cluster network the cluster's
    services answer to the single-node names, and every broker to "kafka"."""
    assert network in networks(services()[prometheus])
    profile = cluster() if network == "cluster" else set(services()) - cluster() - tools()
    for job, target, discovered in _scraped():
        host, _, port = target.rpartition(":")
        found = answering(host, network)
        assert found, f"job {job}: nothing answers to {host} on network {network}"
        assert found <= profile, f"job {job}: {host} reaches {sorted(found - profile)}"
        assert discovered or len(found) == 1, f"job {job}: {host} is {sorted(found)}"
        for name in found:
            assert int(port) in listening_ports(name), f"job {job}: {name} not on {port}"
    brokers = {n for n in profile if "KAFKA_ADVERTISED_LISTENERS" in environment(services()[n])}
    assert answering("kafka", network) == brokers
    datasource = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]["url"]
    assert answering(urlsplit(datasource).hostname or "", network) == {prometheus}


def test_cluster_services_stay_on_the_cluster_network() -> None:
    for name in cluster():
        joined = set(networks(services()[name]))
        assert joined == {"cluster"}, f"{name} joins {sorted(joined)}"
    assert set(networks(services()["mlflow"])) == {"default", "cluster"}, "shared by both"


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
         "--profile", "cluster", "config", "-q"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
