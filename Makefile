# The README's commands. Each makes its own virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## Start the server on the embedded default (no PostgreSQL or Redis needed).
run: $(STAMP)
	$(BIN)/kuda serve

## The whole test suite against real PostgreSQL and Redis (TEST_DATABASE_URL, TEST_REDIS_URL).
test: $(STAMP)
	$(BIN)/python -m pytest

## The suite without the multi-process tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Every check CI runs.
check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
