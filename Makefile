PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test agents unit integration e2e benchtest chaos fuzz lint typecheck check bench scaleout wrk clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/voltpay run

# Every tier of the product's tests, and the bench's own.
test: $(TEST_STAMP)
	$(BIN)/pytest -q tests/agents tests/unit tests/integration tests/e2e bench/tests

agents: $(TEST_STAMP)
	$(BIN)/pytest -q tests/agents

unit: $(TEST_STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(TEST_STAMP)
	$(BIN)/pytest -q tests/integration

e2e: $(TEST_STAMP)
	$(BIN)/pytest -q tests/e2e

benchtest: $(TEST_STAMP)
	$(BIN)/pytest -q bench/tests

chaos: $(TEST_STAMP)
	$(BIN)/python -m tests.e2e.chaos

# The contract fuzzer with a long budget per funding mode (the suite's is 30 s):
# make fuzz SEED=7 FUZZ_SECONDS=600
SEED ?= 1
FUZZ_SECONDS ?= 300
fuzz: $(TEST_STAMP)
	$(BIN)/pytest -q -rP tests/integration/test_api_fuzz.py \
		--fuzz-seed=$(SEED) --fuzz-seconds=$(FUZZ_SECONDS) --timeout=$$(($(FUZZ_SECONDS) + 120))

lint: $(TEST_STAMP)
	$(BIN)/ruff check voltpay tests bench
	$(BIN)/ruff format --check voltpay tests bench

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The bench drives load with wrk, from Debian's packages.
wrk:
	@command -v wrk >/dev/null 2>&1 || { apt-get install -y -q wrk >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wrk >/dev/null 2>&1; }; } \
		|| { echo "the bench needs wrk: apt-get install wrk" >&2; exit 1; }

bench: $(TEST_STAMP) wrk
	$(BIN)/python -m bench

scaleout: $(TEST_STAMP) wrk
	$(BIN)/python -m bench.scaleout

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
