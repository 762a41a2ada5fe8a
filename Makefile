# seco-deploy: every target bootstraps .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
# The torch line: both wheels lie on this machine's disk. timm imports torchvision, and the
# PyPI torchvision fails to import beside the CPU-only torch 2.13.0 wheel, so pin the pair.
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint pytest demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,report,crf]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint pytest

# OpenMP threads that wait passively keep a shared or busy CPU from thrashing (docs/cpu-preset.md).
demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/seco demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
