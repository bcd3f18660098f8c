# `make demo` and `make test` set everything up on a fresh machine; a second run is quick.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= .cache
VENV_STAMP := $(VENV)/.driftloop-installed
DEBIAN_STAMP := $(CACHE)/.debian-packages
MODEL_STAMP := $(CACHE)/models/smollm2-135m-instruct/.driftloop-complete.json
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint bench clean

setup: $(VENV_STAMP) $(DEBIAN_STAMP) $(MODEL_STAMP)

$(VENV_STAMP): requirements/lock.txt pyproject.toml scripts/setup-venv.sh
	scripts/setup-venv.sh $(VENV)
	touch $@

$(DEBIAN_STAMP): scripts/debian-packages.txt
	scripts/install-debian-packages.sh
	mkdir -p $(CACHE) && touch $@

$(MODEL_STAMP): $(VENV_STAMP)
	$(PY) -m driftloop model prepare

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/pytest

demo: setup
	$(PY) -m driftloop demo

bench: setup
	$(PY) -m benchmarks.ingest
	$(PY) -m benchmarks.proxy_overhead
	$(PY) -m benchmarks.api_flood
	$(PY) -m benchmarks.drift_speed
	$(PY) -m benchmarks.drift_power

clean:
	rm -rf $(VENV) $(CACHE) data
