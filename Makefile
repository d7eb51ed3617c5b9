# Shortcuts for dev.py, which holds the README's commands (it needs nothing but Python 3.11+).
PYTHON ?= python3

.PHONY: run test test-fast lint typecheck check clean

run:
	$(PYTHON) dev.py run

test:
	$(PYTHON) dev.py test

test-fast:
	$(PYTHON) dev.py test -m "not slow"

lint:
	$(PYTHON) dev.py lint

typecheck:
	$(PYTHON) dev.py typecheck

check:
	$(PYTHON) dev.py check

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
