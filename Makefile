# burr_async developer commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.DEFAULT_GOAL := help
.PHONY: help demo ui mermaid test lint typecheck unit docs bench bench-quick bench-ui reliability clean

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
	@echo
	@echo "Browse the stored steps in the web UI: make ui  (then open http://127.0.0.1:7241/)"

$(VENV)/.installed-ui: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[ui]"
	@touch $@ $(VENV)/.installed-base

ui: $(VENV)/.installed-ui ## Serve the read-only web UI over the demo database (http://127.0.0.1:7241/)
	$(BIN)/burr-async --url sqlite+aiosqlite:///.burr_async.db ui --graph examples/chatbot.py:graph

MERMAID_VERSION ?= 11.17.2
mermaid: ## Re-fetch the web UI's vendored Mermaid bundle from the npm registry (needs npm)
	rm -rf .make/mermaid && mkdir -p .make/mermaid
	cd .make/mermaid && npm pack --silent mermaid@$(MERMAID_VERSION) >/dev/null
	tar -xzf .make/mermaid/mermaid-$(MERMAID_VERSION).tgz -C .make/mermaid package/dist/mermaid.min.js package/LICENSE
	cp .make/mermaid/package/dist/mermaid.min.js burr_async/ui/static/mermaid.min.js
	cp .make/mermaid/package/LICENSE burr_async/ui/static/mermaid.LICENSE
	sha256sum burr_async/ui/static/mermaid.min.js
	rm -rf .make/mermaid
	@echo "Now record mermaid@$(MERMAID_VERSION) and the checksum in burr_async/ui/static/README.md"

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

bench-ui: $(VENV)/.installed-dev ## Web UI page times on SQLite: a 10,000-step app + 1,000 apps
	$(PY) -m benchmarks.ui

reliability: $(VENV)/.installed-dev ## Fault suite at full size on SQLite and Postgres (~5 min); writes docs/reliability.md
	$(PY) -m tests.reliability.runner --report docs/reliability.md

clean: ## Remove the venv, caches and the demo database
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site .burr_async.db .burr_async.db-wal .burr_async.db-shm
