# Two commands from a fresh clone: `make run` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench check clean docs

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The bundled site at 400x: a simulated day of charging and discharging in under four minutes.
# `make run ARGS="--speed 1"` runs it in real time; Ctrl-C stops it cleanly.
ARGS ?= --speed 400
run: $(STAMP)
	$(BIN)/v2g-plc run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run_all

check: $(STAMP)
	$(BIN)/v2g-plc check runtime/sites/sim.yaml

docs: $(STAMP)
	$(BIN)/python -m runtime.docgen

clean:
	rm -rf $(VENV) build *.egg-info
