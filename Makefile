# The README's two commands: `make deploy` (deploy on the local stack from a fresh clone) and
# `make test` (every test). Everything else is a step of those.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_CONTROLLER ?= $(shell ls -d $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3 2>/dev/null | tail -1 || command -v python3.13)
VENV := .venv
PY := $(VENV)/bin/python
STACK := PYTHONPATH=hack $(PY) -m mlstack_local
WITH_ENV := hack/with-stack-env
COLLECTION_LINK := .local/collections/ansible_collections/mlstack/mlflow
PLAYBOOK := $(WITH_ENV) $(VENV)/bin/ansible-playbook -i inventory/local

.PHONY: help venv up down status deploy test lint unit integration molecule bench clean system-deps

help:
	@echo "make deploy   - start the local stack and deploy MLflow on it (first run builds for ~25-30 min)"
	@echo "make test     - lint, unit tests, integration tests and Molecule scenarios on the local stack"
	@echo "make up|down|status - the local stack alone;  make bench - benchmarks"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -n "$(PYTHON_CONTROLLER)" || { echo "ERROR: Python 3.13 not found (pyenv install 3.13 or set PYTHON_CONTROLLER)"; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON_CONTROLLER)"
	$(PYTHON_CONTROLLER) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn "$(CURDIR)" $@

venv: $(VENV)/.installed $(COLLECTION_LINK)

system-deps:
	@bash hack/system-deps.sh

up: venv system-deps
	$(STACK) up

down:
	@if [ -x $(PY) ]; then $(STACK) down; fi

status: venv
	$(STACK) status

deploy: up
	$(PLAYBOOK) site.yml --tags mlflow
	$(STACK) endpoint

lint: venv
	$(VENV)/bin/yamllint -s .
	$(VENV)/bin/ruff check plugins tests hack bench roles
	$(VENV)/bin/ruff format --check plugins tests hack bench roles
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg $(VENV)/bin/ansible-lint --profile production

unit: venv
	$(VENV)/bin/pytest -q tests/unit

integration: up
	$(WITH_ENV) $(VENV)/bin/pytest -q tests/integration

molecule: up
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(WITH_ENV) $(VENV)/bin/molecule test --all

test: venv system-deps
	hack/run-tests.sh

bench: up
	$(WITH_ENV) $(PY) bench/run.py

clean: down
	rm -rf .local
