# Every target installs what it needs, so each works on a fresh clone.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/uv/bin/uv)
SYNC := .venv/.synced

.PHONY: help bootstrap system-deps demo test lint format stack-up stack-down stack-status bench

help:
	@echo "make demo        run the pipeline on the local stack, with a summary"
	@echo "make test        run every test (starts the local stack when needed)"
	@echo "make lint        ruff lint and format check, and the import contracts"
	@echo "make stack-up    start Kafka, schema registry and S3 server as local processes"
	@echo "make stack-down  stop them"

$(CURDIR)/.tools/uv/bin/uv:
	python3 -m pip install --quiet --disable-pip-version-check --target .tools/uv "uv==$(UV_VERSION)"

$(SYNC): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

bootstrap: $(SYNC)
	@command -v uv >/dev/null || echo 'uv is in .tools/uv/bin; for the commands of README.md: export PATH="$$PWD/.tools/uv/bin:$$PATH"'

system-deps:
	@bash infra/local_stack/system-deps.sh

demo: bootstrap system-deps
	$(UV) run sensorstream demo

test: bootstrap system-deps
	$(UV) run pytest

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports --no-cache

format: bootstrap
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

stack-up: bootstrap system-deps
	$(UV) run sensorstream stack up

stack-down: bootstrap
	$(UV) run sensorstream stack down

stack-status: bootstrap
	$(UV) run sensorstream stack status
