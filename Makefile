# The README's commands. Each target creates .venv and installs requirements.lock on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: venv repro test test-fast lint format bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

## Run the pipeline (dvc repro) for the experiments in params.yaml. params.yaml is checked
## first: DVC removes a stage's outputs before its command (and our check) runs.
## Ends with `atelier where`: the report, the champions, the command that opens the plots.
repro: venv
	test -d .git || git init --quiet
	$(BIN)/python -m pipeline check
	$(BIN)/dvc repro
	@echo
	@$(BIN)/atelier where

## Run the whole test suite (unit, integration, slow end-to-end).
test: venv
	$(BIN)/python -m pytest -m "not gpu" -n auto

## Unit tests only.
test-fast: venv
	$(BIN)/python -m pytest tests/unit -m "not slow and not gpu"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python benchmarks/data_stages.py

clean:
	rm -rf data models live metrics plots reports checkpoints
