# `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch 2.14.1 with its torchvision first (anomalib, the zoo extra, needs torchvision; a
	# looser requirement on an empty env pulls other wheels).
	$(BIN)/python -c "import torchvision" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,export,serve,ray,zoo]"
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
