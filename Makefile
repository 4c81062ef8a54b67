# Every target bootstraps .venv from nothing: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8787

.PHONY: run test bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m host serve --plugins plugins --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench_core.py

lint: $(STAMP)
	$(VENV)/bin/ruff check host tests bench
	$(VENV)/bin/deno check worker_runtime/worker.ts

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
