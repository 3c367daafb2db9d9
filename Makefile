# The two commands of the README: `make run` and `make test`. Both make .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ./data

.PHONY: run test bench soak lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/flowd --data-dir $(DATA)

test: $(VENV)/.installed-test lint typecheck
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.run

# the crash test, long: SIGKILL the daemon up to 1000 times under 3 writers
soak: $(VENV)/.installed-test
	FLOWD_CRASH_KILLS=$${FLOWD_CRASH_KILLS:-1000} FLOWD_CRASH_SECONDS=$${FLOWD_CRASH_SECONDS:-900} \
		$(BIN)/python -m pytest -q -s --timeout 0 tests/integration/test_crash.py -k loses_no_acknowledged

lint: $(VENV)/.installed-test
	$(BIN)/ruff check flowd client tests benchmarks

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy client
	$(BIN)/mypy flowd

clean:
	rm -rf $(VENV) build *.egg-info
