# hookrelay — the one command surface (README, CI and people run these targets).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
KAFKA  := $(PYTHON) deploy/kafka/kafkactl.py
KAFKA_PORT ?= 9092
PROMETHEUS := $(PYTHON) deploy/prometheus/fetch_prometheus.py

.PHONY: help venv tools-test tools-demo test unit integration lint fmt demo kafka-start kafka-stop kafka-status clean prometheus

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/hookrelay: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	@touch $@

venv: $(BIN)/hookrelay  ## create the virtualenv with hookrelay and its dev tools

test: tools-test venv prometheus  ## the whole suite: unit + integration against a real local Kafka broker
	$(BIN)/pytest

tools-test:  ## name every tool make test needs and lacks, before anything is built
	@$(PYTHON) deploy/tools/check_tools.py test

tools-demo:  ## name every tool make demo needs and lacks, before anything is built
	@$(PYTHON) deploy/tools/check_tools.py demo

prometheus:  ## Debian's prometheus + promtool into .cache/prometheus (rules and scrape tests)
	$(PROMETHEUS)

unit: venv  ## unit tests only (no broker)
	$(BIN)/pytest tests/unit

integration: venv  ## integration tests only (starts a broker)
	$(BIN)/pytest tests/integration

lint: venv  ## ruff format --check, ruff check, mypy --strict, the layer contracts (lint-imports)
	$(BIN)/ruff format --check daemon tests deploy
	$(BIN)/ruff check daemon tests deploy
	$(BIN)/mypy --strict daemon/
	$(BIN)/lint-imports

fmt: venv  ## apply ruff formatting and safe fixes
	$(BIN)/ruff format daemon tests deploy
	$(BIN)/ruff check --fix daemon tests deploy

demo: tools-demo venv  ## local Kafka + demo receiver + daemon on deploy/demo/, publish every event, verify
	$(BIN)/python deploy/demo/run_demo.py

.PHONY: bench
bench: venv  ## benchmarks (issue 4): own broker + receiver, table + bench-results.json; QUICK=1 ~5 min
	$(BIN)/python -m tests.bench $(if $(QUICK),--quick) $(if $(BENCH_SCALE),--scale $(BENCH_SCALE)) $(BENCH_ARGS)

kafka-start:  ## start the local broker on KAFKA_PORT (default 9092)
	$(KAFKA) start --port $(KAFKA_PORT)

kafka-stop:  ## stop the local broker on KAFKA_PORT
	$(KAFKA) stop --data-dir .cache/kafka-data/$(KAFKA_PORT)

kafka-status:
	$(KAFKA) status --data-dir .cache/kafka-data/$(KAFKA_PORT)

clean:  ## remove the virtualenv, caches and build leftovers (keeps downloaded Kafka jars)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist .import_linter_cache .grimp_cache
