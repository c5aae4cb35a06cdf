# flowyard: `make run` and `make test` bootstrap .venv from nothing but Python 3.11+.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Parallel test processes: most tests wait on I/O (databases, subprocesses, polling).
PYTEST_WORKERS ?= 4

.PHONY: run ui test test-fast lint typecheck format chaos fuzz bench bench-flow clean venv schema docs demo

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "flowyard needs Python 3.11+"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

venv: $(STAMP)

# Two samples (approval, lead-routing-http) call fake services on 127.0.0.1:9900 (examples/fake_crm.py),
# which the default egress policy refuses; the provider samples need credentials (`make demo`).
run: $(STAMP)
	FLOWYARD_EGRESS_ALLOW=$${FLOWYARD_EGRESS_ALLOW:-127.0.0.1:9900} $(BIN)/flowyard serve --load-samples

# The web console (console/, decision 0033): built with Node into src/flowyard/console/static,
# which is committed, so `make run` needs no Node. Run after changing console/src.
ui:
	cd console && npm ci --no-audit --no-fund && npm run build

# The three provider samples end to end: local fakes (Salesforce, SMTP, Graph), a server on a
# temporary database, a few leads, a campaign and Instagram comments (examples/demo.py).
demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples/plugin_pack
	$(BIN)/ruff format --check src tests bench examples/plugin_pack
	$(BIN)/mypy src
	$(BIN)/mypy --strict examples/plugin_pack/src
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench examples/plugin_pack
	$(BIN)/ruff format src tests bench examples/plugin_pack

# worksteal: a worker that runs out of tests takes some from a busy one (the suite has a few
# 10-40 s tests; a plain split left one process finishing alone).
test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# Under a minute, while editing: the pure engine, expressions and domain, and the store
# contract on SQLite (no PostgreSQL, no subprocesses, no browser). `make test` is the whole suite.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not postgres and not slow and not ui" tests/unit tests/contract $(PYTEST_ARGS)

# Docs that quote the code (the claim statement, its predicate, the step key) are
# regenerated from it; tests/unit/test_docblocks.py fails when they are stale.
docs: $(STAMP)
	PYTHONPATH=tests $(BIN)/python -m support.docblocks

schema: $(STAMP)
	$(BIN)/flowyard schema -o schema/workflow.schema.json

# The reliability acceptance run: 2,000 runs per backend under random SIGKILLs (override with
# `make chaos FLOWYARD_CHAOS_RUNS=N`; FLOWYARD_CHAOS_SEED fixes the RNG). `make test` runs fewer.
chaos: FLOWYARD_CHAOS_RUNS ?= 2000
chaos: $(STAMP)
	FLOWYARD_CHAOS_RUNS=$(FLOWYARD_CHAOS_RUNS) $(BIN)/python -m pytest -q -s tests/chaos $(PYTEST_ARGS)

# schemathesis against a real server (50 examples per operation, every phase but stateful).
fuzz: $(STAMP)
	cd tests && ../$(BIN)/python -m support.fuzz $(FUZZ_ARGS)

# flowyard against DBOS and Celery (Redis on 127.0.0.1:6379): 50,000 runs on PostgreSQL,
# 2 worker processes each (~15-30 min on 2 cores; `bench/throughput.py --runs 2000` is quick).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,bench]'
	$(BIN)/python bench/throughput.py

# Flow control at scale: a 10,000-item map on PostgreSQL, 1,000-node definitions (~1-2 min).
bench-flow: $(STAMP)
	$(BIN)/python bench/flow.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
