# Everyday commands.  `make demo` and `make test` are the README's two set-up commands.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Debian packages the tests and the demo use: prompt rendering, SIPp, the Asterisk sandbox build,
# the SIP dispatcher in front of two Asterisks (Kamailio),
# the web console's browser tests (headless Chromium, its WebDriver, a font with Chinese glyphs for screenshots),
# and the database failover topology (pg_auto_failover's monitor and keepers over PostgreSQL 15).
SYSTEM_PACKAGES := espeak-ng sox sip-tester debootstrap kamailio chromium chromium-driver fonts-wqy-zenhei \
	postgresql-15 postgresql-15-auto-failover pg-auto-failover-cli

.PHONY: help venv system-deps sandbox demo test lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create the virtualenv with every dependency

system-deps: ## install the Debian packages the tests need (as root), when missing
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

sandbox: $(STAMP) system-deps ## build (once) and start the real Asterisk sandbox
	$(PY) -m testkit.sandbox build

demo: $(STAMP) system-deps ## run the scripted demo of a card's whole life (SQLite, ./demo-run)
	PATH=$(abspath $(VENV))/bin:$$PATH bash demo/card-life.sh

test: $(STAMP) system-deps ## run the whole suite: SQLite, the real PostgreSQL on 127.0.0.1:5432, Asterisk and SIPp
	$(PY) -m pytest

lint: $(STAMP) ## ruff over the code
	$(VENV)/bin/ruff check cardmgmt marketing_iface ivr recharge_server console testkit voice_prompts asterisk_conf cli cli.py tests bench

bench: $(STAMP) ## run the benchmarks (minutes); results go to bench/RESULTS.md by hand
	$(PY) bench/bench_batch.py --quantity 1000000
	$(PY) bench/bench_sales.py --quantity 100000

clean: ## remove the virtualenv and the demo's data
	rm -rf $(VENV) demo-run
