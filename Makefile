# `make demo` and `make test` set up .venv on first use (scripts/setup.sh), then run.
PY := .venv/bin/python

.PHONY: setup demo test lint perf-quick

setup: .venv/.installed
.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh && touch $@

demo: setup
	$(PY) -m harness.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

perf-quick: setup
	bash benchmarks/perf/run_all.sh --quick
