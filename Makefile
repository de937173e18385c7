# Everyday commands.  `make demo` and `make test` are the README's two set-up commands.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv demo test lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create the virtualenv with every dependency

demo: $(STAMP) ## run the scripted demo of a card's whole life (SQLite, ./demo-run)
	PATH=$(abspath $(VENV))/bin:$$PATH bash demo/card-life.sh

test: $(STAMP) ## run the whole test suite (SQLite and the real PostgreSQL on 127.0.0.1:5432)
	$(PY) -m pytest

lint: $(STAMP) ## ruff over the code
	$(VENV)/bin/ruff check cardmgmt cli.py tests bench

bench: $(STAMP) ## run the benchmarks (minutes); results go to bench/RESULTS.md by hand
	$(PY) bench/bench_batch.py --quantity 1000000

clean: ## remove the virtualenv and the demo's data
	rm -rf $(VENV) demo-run
