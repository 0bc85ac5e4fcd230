# Two commands matter: `make up` (the stack, for a person) and `make test` (everything,
# for CI). Both install what is missing first. `make` alone lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The Python install is redone only when pyproject.toml or constraints.txt change.
INSTALL_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
STAMP := .cache/install-$(INSTALL_HASH).stamp
# Every Python package of the repository (directories with an __init__.py).
PACKAGES := $(patsubst %/__init__.py,%,$(wildcard */__init__.py))
DEBIAN_PACKAGES := redis-server prometheus kcat default-jre-headless maven
# Headless browser for the alerting review-page test (tests/alerting/test_review_page.py).
DEBIAN_PACKAGES += chromium chromium-driver
# Compose CLI (client only, no engine) for tests/test_compose.py's `config -q` check.
DEBIAN_PACKAGES += docker-compose
# Redis metrics for Prometheus (Infrastructure dashboard; tests/observability/).
DEBIAN_PACKAGES += prometheus-redis-exporter
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# `make up` uses Docker Compose when an engine answers, the local launcher otherwise.
ENGINE := command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
# Extra arguments, e.g. make up ARGS="--services kafka,redis", make test ARGS="-x tests/launcher"
ARGS ?=
# The compose services of the cluster profile (docker-compose.yml, profile "cluster"):
# `up` names them so the single-node stack is not started beside them.
CLUSTER_SERVICES := kafka-1 kafka-2 kafka-3 redis-node-1 redis-node-2 redis-node-3 \
	redis-node-4 redis-node-5 redis-node-6 redis-cluster producer-cluster scorer-cluster alerting-cluster \
	retrainer-cluster redis-exporter-cluster prometheus-cluster grafana-cluster

.PHONY: help install system-packages up down status logs test lint clean bench e2e \
	up-cluster down-cluster test-cluster test-reproductions

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) system-packages ## Venv + pinned Python deps, Debian packages, Kafka jars (idempotent)
	@$(PY) -m launcher fetch

$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/pyvenv.cfg
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@mkdir -p .cache && rm -f .cache/install-*.stamp && touch $@

system-packages: ## Install redis-server, prometheus (promtool), kcat, Java, Maven if missing
	@missing=""; \
	for tool in redis-server prometheus promtool kcat java mvn chromium chromedriver docker-compose prometheus-redis-exporter; do \
		command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "missing:$$missing -> apt-get install $(DEBIAN_PACKAGES)"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(DEBIAN_PACKAGES); \
	fi

up: install ## Start Kafka, Redis, MLflow, Prometheus and the services; wait until healthy
	@if $(ENGINE); then docker compose up -d --wait; else $(PY) -m launcher up $(ARGS); fi

down: ## Stop what `make up` started
	@if $(ENGINE); then docker compose down; else $(PY) -m launcher down $(ARGS); fi

status: ## Table of the services: pid, port, health
	@if $(ENGINE); then docker compose ps; else $(PY) -m launcher status $(ARGS); fi

logs: ## The end of each service's log
	@if $(ENGINE); then docker compose logs --tail 50; else $(PY) -m launcher logs $(ARGS); fi

test: install ## Every test but the cluster ones and the full-size reproductions; fixtures start and stop the test stack
	$(PY) -m pytest $(ARGS)

# The cluster profile: 3 Kafka brokers (KRaft quorum of 3), a Redis Cluster of 3 masters
# and 3 replicas, MLflow, Prometheus and the apps (launcher/README.md).
up-cluster: install ## Start the cluster profile (CLUSTER_* ports of .env); wait until healthy
	@if $(ENGINE); then docker compose --profile cluster up -d --wait $(CLUSTER_SERVICES); \
	else $(PY) -m launcher up --profile cluster $(ARGS); fi

down-cluster: ## Stop what `make up-cluster` started
	@if $(ENGINE); then docker compose --profile cluster stop $(CLUSTER_SERVICES); \
	else $(PY) -m launcher down --profile cluster $(ARGS); fi

test-cluster: install ## The cluster profile's tests against its real brokers and Redis Cluster (pytest -m cluster)
	$(PY) -m pytest -m cluster $(ARGS)

test-reproductions: install ## The handbook's published file and Chapter 3 figures, reproduced at full size (~2 min)
	$(PY) -m pytest -m reproduction $(ARGS)

e2e: install ## make up's path end to end at its full 2,000 cards, with the figures (tests/test_make_up.py)
	FRAUD_E2E_CARDS=2000 $(PY) -m pytest tests/test_make_up.py -s $(ARGS)

bench: install ## Benchmark one scorer and the naive baseline on the running stack (bench/README.md)
	$(PY) -m bench --ensure-stack --readme $(ARGS)

lint: install ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(PACKAGES)

clean: ## Stop launched stacks, remove .run (keeps .venv and .cache)
	@if [ -x $(PY) ]; then \
		$(PY) -m launcher down --profile stack; \
		$(PY) -m launcher down --profile test; \
		$(PY) -m launcher down --profile cluster; \
	fi
	rm -rf .run
