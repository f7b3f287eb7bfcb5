# The two commands: `make demo` (main job) and `make test` (test suite).
# Each creates .venv with plain pip when it is missing and installs what it needs.
# `make bench` runs every benchmark and prints one table of ratios against the peers
# (BENCH_ARGS=--quick for a short smoke run).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.segxai-installed
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test install typecheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install -q -e ".[dev,bench,smp,ray,data,runtimes]"
	$(PIP) install -q --no-deps stardist==0.9.2 nilearn==0.14.1
	$(PY) -m segxai.models.mediapipe_selfie
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segxai demo $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m mypy
	$(PY) -m mypy --strict src/segxai/core
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) segxai-report .pytest_cache
