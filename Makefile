# burr_async developer commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck unit docs bench bench-quick reliability clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.installed-base

demo: $(VENV)/.installed-base ## Run the chatbot on embedded SQLite; run it again to see it resume
	printf 'hello\nhow do you persist my chat?\nwhat happens if I come back later?\n' | \
		$(PY) examples/chatbot.py --app-id demo --user alice

lint: $(VENV)/.installed-dev ## ruff (lint + format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev ## mypy --strict on the package
	$(BIN)/mypy --strict burr_async

unit: $(VENV)/.installed-dev ## The test suite alone (SQLite and Postgres)
	$(BIN)/pytest

docs: $(VENV)/.installed-dev ## Build the docs (fails on broken references)
	$(BIN)/mkdocs build --strict --site-dir site

test: lint typecheck unit docs bench-quick ## Everything CI runs: lint, types, the whole suite on both backends, docs, bench smoke

bench: $(VENV)/.installed-dev ## Benchmarks against the raw drivers, Burr and LangGraph (~5 min)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m benchmarks

bench-quick: $(VENV)/.installed-dev ## Benchmark smoke run (burr_async and raw drivers only)
	$(PY) -m benchmarks --quick

reliability: $(VENV)/.installed-dev ## Fault suite at full size on SQLite and Postgres (~5 min); writes docs/reliability.md
	$(PY) -m tests.reliability.runner --report docs/reliability.md

clean: ## Remove the venv, caches and the demo database
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site .burr_async.db .burr_async.db-wal .burr_async.db-shm
