# One-command developer setup and the test suite. `make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export MLFLOW_STACK_CACHE ?= $(HOME)/.cache/mlflow-stack
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export ANSIBLE_FORCE_COLOR ?= 0
export PY_COLORS ?= 0
# Molecule scenarios to run, in order; `make molecule SCENARIOS="smoke"` runs a subset.
SCENARIOS ?= $(shell scripts/list-scenarios.sh)
# Scenarios run at once after the first (scripts/run-molecule.sh). Two fit this project's 2-core,
# 24 GiB machine: much of a scenario's time is apt, pip and waiting for services.
export MOLECULE_JOBS ?= 2

REQ_STAMP := $(VENV)/.requirements.sha256

.PHONY: help
help: ## Show the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: setup
setup: venv collection-link docker images minio-bin wheels ## Everything a fresh machine needs (idempotent)

.PHONY: venv
venv: ## Create .venv with the pinned Python requirements
	@want=$$(sha256sum requirements.txt | cut -d' ' -f1); \
	if [ -x $(BIN)/python ] && [ "$$(cat $(REQ_STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo "==> .venv up to date"; \
	else \
	  echo "==> installing Python requirements into .venv"; \
	  [ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/pip install -q --disable-pip-version-check --upgrade pip; \
	  $(BIN)/pip install -q --disable-pip-version-check -r requirements.txt; \
	  echo "$$want" > $(REQ_STAMP); \
	fi

.PHONY: collection-link
collection-link: ## Make mlops.mlflow_stack resolve to this checkout
	@mkdir -p .collections/ansible_collections/mlops
	@ln -sfn ../../.. .collections/ansible_collections/mlops/mlflow_stack

.PHONY: docker
docker: ## Make sure a Docker engine answers (installs and starts one as root)
	@scripts/ensure-docker.sh

.PHONY: images
images: docker ## Build (or reuse) the Debian 12 and 13 systemd test-host images
	@scripts/build-images.sh bookworm trixie

.PHONY: minio-bin
minio-bin: ## Build (or reuse) the pinned MinIO server and mc from source
	@scripts/build-minio.sh >/dev/null

.PHONY: wheels
wheels: venv ## Fill the wheelhouse the test hosts install MLflow from
	@scripts/build-wheelhouse.sh

.PHONY: lint
lint: venv collection-link ## yamllint and ansible-lint (production profile)
	yamllint -s .
	ansible-lint --offline

.PHONY: unit
unit: venv collection-link ## Unit tests (no network)
	scripts/pytest-nonempty.sh tests/unit

.PHONY: integration
integration: venv collection-link minio-bin ## Integration tests against real PostgreSQL and MinIO on loopback
	scripts/pytest-nonempty.sh tests/integration

.PHONY: molecule
molecule: venv collection-link images minio-bin wheels ## Every Molecule scenario (or SCENARIOS="a b")
	scripts/run-molecule.sh $(SCENARIOS)

.PHONY: build
build: venv ## Build the collection artifact and prove it installs and resolves
	scripts/check-collection-build.sh

.PHONY: test
test: setup lint unit integration build molecule ## What CI runs

.PHONY: demo
demo: ## Deploy the whole stack on local hosts and train a model through it
	scripts/demo.sh up $(if $(CSV),--csv $(CSV))

.PHONY: demo-destroy
demo-destroy: ## Tear the demo down
	scripts/demo.sh down

.PHONY: bench
bench: ## Load the demo stack and the plain mlflow server side by side (QUICK=1: under a minute)
	scripts/bench.sh

.PHONY: clean
clean: ## Remove local build products (keeps the caches outside the repository)
	rm -rf .collections .pytest_cache mlops-mlflow_stack-*.tar.gz
