# Every target bootstraps .venv from nothing: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8787

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-all bench lint clean venv redis-server postgresql chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m host serve --plugins plugins --host $(HOST) --port $(PORT)

# Two test processes (pytest-xdist), each file in one of them: the suite spends most of its time
# waiting on real processes (Deno workers, serve, postgres), so two halve it on two cores.
# PYTEST_WORKERS=0 runs it in this process alone.
PYTEST_WORKERS ?= 2

test: $(STAMP) redis-server postgresql chromium
	$(PY) -m pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

# Every test on both event loops (make test runs trio for the call path and the pools only).
test-all: $(STAMP) redis-server postgresql chromium
	PLUGIN_HOST_TEST_ALL_BACKENDS=1 $(PY) -m pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

# The redis tests start their own redis-server on a free loopback port; Debian's package
# provides the binary when the machine lacks it.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || test -x /usr/sbin/redis-server || \
	  { echo "installing redis-server (Debian package)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

# The PostgreSQL tests run their own server: initdb into a temp dir, postgres on a free loopback
# port (as the package's `postgres` user when we are root). Debian's package provides both.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { echo "installing postgresql (Debian package)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

# The dashboard tests drive Debian's headless Chromium through Playwright (never
# `playwright install`: no browser is downloaded).
chromium:
	@test -x /usr/bin/chromium || \
	  { echo "installing chromium (Debian package)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

bench: $(STAMP)
	$(PY) bench/bench_core.py
	$(PY) bench/bench_policy.py
	$(PY) bench/bench_http.py
	$(PY) bench/bench_isolation.py
	$(PY) bench/bench_stations.py
	$(PY) bench/bench_processes.py
	$(PY) bench/bench_density.py

lint: $(STAMP)
	$(VENV)/bin/ruff check host tests bench
	$(VENV)/bin/deno check worker_runtime/worker.ts
	$(VENV)/bin/deno check --import-map=worker_runtime/import_map.json plugins/*/mod.ts

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
