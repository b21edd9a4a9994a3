# `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch 2.13.0 first: a looser requirement on an empty env pulls CUDA wheels.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,export,serve,ray]"
	touch $(STAMP)

# Offline without the official weights: make demo WEIGHTS=path/to/checkpoint.pth (or random)
demo: $(STAMP)
	$(BIN)/l2bt demo --out runs/demo $(if $(WEIGHTS),--weights $(WEIGHTS))

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_teacher_predict_train.py
	$(BIN)/python benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) runs .pytest_cache
