# Atoll — the two commands that do all set-up on a fresh machine:
#   make demo   create .venv, install, run the closed-loop demo on synthetic data
#   make test   create .venv, install dev deps (+ ray extra), lint, type-check, test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_OUT ?= out/demo
DEMO_DEVICES ?= 50000

.PHONY: demo test lint typecheck pytest bench clean install install-dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ray,bench]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/atoll demo --out $(DEMO_OUT) --devices $(DEMO_DEVICES)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

# Tests that start a real Ray instance run in a pytest process of their own, so that
# a crash of Ray's driver cannot take the rest of the suite's report with it.
pytest: $(VENV)/.installed-dev
	@$(VENV)/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE '^(ray|pyarrow|duckdb|numpy|cryptography|lightgbm|hypothesis|pytest)==' | tr '\n' ' '; echo
	$(VENV)/bin/pytest -q -m "not ray"
	$(VENV)/bin/pytest -q -m ray

test: lint typecheck pytest

bench: $(VENV)/.installed-dev  ## every benchmark at a small size; BENCH=full for the issues' scales
	PY=$(PY) benchmarks/run_all.sh $(or $(BENCH),quick)

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
