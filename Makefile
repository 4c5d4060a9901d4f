# Voice Agent Orchestrator — two commands: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
DATA_DIR ?= $(CURDIR)/.data
export DATA_DIR
ROLE ?= admin
CHROMIUM := /usr/bin/chromium

.PHONY: help install lock run dev test lint fmt token bench bench-smoke bench-graph mutate eval eval-record clean

help:
	@echo "make run     - create the environment, install, start both services (Ctrl-C stops both)"
	@echo "make test    - run the test suite (Postgres/Redis on 127.0.0.1 if up, else its own)"
	@echo "make dev     - like run, with auto-reload"
	@echo "make call AGENT=<id> - talk to an agent from the terminal through the running gateway (console: /console)"
	@echo "make lint    - ruff + mypy;  make fmt - format"
	@echo "make token ROLE=admin - print a management JWT for local use"
	@echo "make eval    - agent tests: run scenarios (SCENARIOS=evals/scenarios) against running services, else its own"
	@echo "make eval-record CONVERSATION=<id> - export a stored call as a scenario"
	@echo "make mutate - mutation testing of the protection modules (docs/mutation-report.md); MODULES=\"auth redaction\" for some"
	@echo "make bench   - benchmarks (see BENCHMARKS.md); make bench-graph - the agent graph alone"

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check uv

# Installs the pinned lock (tests and tools included) and the three projects in editable mode,
# with bytecode compiled: where PYTHONDONTWRITEBYTECODE is set (CI images, our Dockerfiles) Python
# never caches it, and every service start would recompile every module it imports (measured on a
# 2-core machine: gateway ready 3.1 s and orchestrator 8.2 s uncompiled).
$(VENV)/.installed: $(UV) requirements-dev.lock shared/pyproject.toml realtime-gateway/pyproject.toml orchestrator/pyproject.toml evals/pyproject.toml
	$(UV) pip sync --python $(BIN)/python --compile-bytecode requirements-dev.lock
	$(BIN)/python -m compileall -q -j 0 shared realtime-gateway/realtime_gateway orchestrator/orchestrator evals/agent_eval bench scripts > /dev/null
	touch $@

install: $(VENV)/.installed

# Re-pin after changing a pyproject: the dev lock and one lock per service image.
lock: $(UV)
	$(UV) pip compile requirements-dev.in -o requirements-dev.lock --python-version 3.11 -q
	for s in realtime-gateway orchestrator; do \
	  $(UV) pip compile $$s/requirements.in -o $$s/requirements.lock --python-version 3.11 -q \
	    --no-emit-package vao-shared --no-emit-package $$s; done

run: install
	$(BIN)/python -m scripts.run

dev: install
	$(BIN)/python -m scripts.run --reload

# A test call from the terminal (realtime_gateway/terminal_phone.py, also `vao-call`) to AGENT (the
# default agent if unset), through the running gateway (GATEWAY_URL, default make run's), with an
# operator token made here for the hour.
.PHONY: call
call: install
	@VAO_TOKEN="$$($(BIN)/python -m scripts.token --role operator --sub make-call --ttl 3600)" \
	  $(BIN)/python -m realtime_gateway.terminal_phone $(if $(AGENT),--agent $(AGENT))

test: install $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The console's and the eval report's browser tests drive Debian's headless Chromium: installed
# here when it is missing (apt, as root or with passwordless sudo), so a fresh machine needs
# nothing but `make test`; never a browser download of Playwright's own. Where apt cannot run,
# those tests fail saying how to install it.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "make test: $(CHROMIUM) is missing and apt needs root: apt-get install chromium"; exit 0; fi; \
	echo "make test: installing Debian's chromium for the browser tests"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	  --no-install-recommends chromium >/dev/null || echo "make test: apt-get install chromium failed"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared realtime-gateway/realtime_gateway orchestrator/orchestrator evals/agent_eval

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Mutation testing (cosmic-ray) of the modules that hold a protection, each against its own tests;
# not part of `make test` or CI. Writes docs/mutation-report.md. MODULES="redaction addresses" for some.
mutate: install
	$(BIN)/python -m scripts.mutate $(MODULES)

token: install
	@$(BIN)/python -m scripts.token --role $(ROLE)

# Agent tests before deploy (evals/README.md): scenarios through the real gateway and orchestrator,
# against running services (EVAL_GATEWAY_URL / EVAL_ORCHESTRATOR_URL, default make run's) or, when
# none answer, services of its own on the embedded defaults. EVAL_ARGS="--repeat 5" and the like.
SCENARIOS ?= evals/scenarios
eval: install
	$(BIN)/vao-eval run $(SCENARIOS) $(EVAL_ARGS)

eval-record: install
	@test -n "$(CONVERSATION)" || { echo "usage: make eval-record CONVERSATION=<conversation id>"; exit 2; }
	$(BIN)/vao-eval record $(CONVERSATION) $(EVAL_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

# ---- ops: containers and cloud deploys (owned with docker-compose*.yml, deploy.sh, deploy/) ----
# `docker compose` (v2 plugin) when present, else the standalone `docker-compose`; both need v2.24.4+.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_PROD := -f docker-compose.yml -f docker-compose.prod.yml
COMPOSE_DEBUG := -f docker-compose.yml -f docker-compose.debug.yml
# Cloud deploys only print their plan unless CONFIRM=1.
DEPLOY_FLAGS = $(if $(filter 1,$(CONFIRM)),,--dry-run)

.PHONY: docker-build up up-prod up-debug down deploy-ecs deploy-cloud-run

docker-build:
	$(COMPOSE) build node-backend python-backend

up:
	$(COMPOSE) up -d

up-prod:
	$(COMPOSE) $(COMPOSE_PROD) up -d --build

up-debug:
	$(COMPOSE) $(COMPOSE_DEBUG) up --build

# Stops the stack from any of the three files (the prod-only load balancer goes as an orphan).
down:
	$(COMPOSE) down --remove-orphans

deploy-ecs:
	./deploy.sh $(DEPLOY_FLAGS) aws-ecs

deploy-cloud-run:
	./deploy.sh $(DEPLOY_FLAGS) google-cloud-run
# ---- end ops ----

# Benchmarks (BENCHMARKS.md): both services under load beside a bare two-hop floor.
bench: install
	$(BIN)/python -m bench

bench-smoke: install
	$(BIN)/python -m bench --smoke --json bench/results/smoke.json

# The orchestrator's agent graph alone, in process (zero-latency fake LLM at the HTTP layer):
# turn p50/p99 at 1 and 50 conversations, each stage's share, Chroma recall at 10,000 memories.
bench-graph: install
	$(BIN)/python -m bench.orchestrator_graph
