# Two commands from a fresh clone: `make run` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow soak lint bench check clean docs secc-venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The bundled site at 400x: a simulated day of charging and discharging in under four minutes.
# `make run ARGS="--speed 1"` runs it in real time; Ctrl-C stops it cleanly.
ARGS ?= --speed 400
run: $(STAMP)
	@echo "HMI: http://127.0.0.1:15512/ (no user until you make one: $(BIN)/python -m runtime.tasks.hmi.users add NAME operator; docs/hmi.md)"
	$(BIN)/v2g-plc run $(ARGS)

# Tiers: `make test` (everything not marked slow, 2 workers), `make test-slow` (kill loops, long
# simulated periods), `make soak` (24 simulated hours, then one real hour). pytest's exit 5 means "no
# tests collected": a tier that is empty today passes.
PYTEST := $(BIN)/python -m pytest -q
JOBS ?= 2
test: $(STAMP)
	$(PYTEST) -n $(JOBS) -m "not slow" $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: $(STAMP)
	$(PYTEST) -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

# SOAK_ARGS="--sim-hours 2 --real-s 60" for a short one; the result file is var/soak/result.json.
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python -m tests.soak.soak $(SOAK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run_all

check: $(STAMP)
	$(BIN)/v2g-plc check runtime/sites/sim.yaml

docs: $(STAMP)
	$(BIN)/python -m runtime.docgen

# The ISO 15118 SECC service's own virtualenv (docs/iso15118.md): the `iso15118` package pins pydantic 1, so
# it never shares .venv. aiofile: its EV simulator needs it and does not declare it. Java runs its EXI codec.
SECC_VENV := .venv-secc
SECC_STAMP := $(SECC_VENV)/.installed
$(SECC_STAMP):
	$(PY) -m venv $(SECC_VENV)
	$(SECC_VENV)/bin/pip install --quiet --upgrade pip
	$(SECC_VENV)/bin/pip install --quiet 'iso15118==0.31.*' 'aiofile>=3.8,<4'
	touch $(SECC_STAMP)
secc-venv: $(SECC_STAMP)

# The bundled site with an SECC and the package's EV simulator over ISO 15118-20, one session after another
# (root: network namespaces; docs/iso15118.md "Running the bundled site with a simulated EV"). `make run` is
# unchanged. EV_ARGS="--speed 1 --config '-20 AC BPT'".
.PHONY: run-ev
EV_ARGS ?=
run-ev: $(STAMP) $(SECC_STAMP)
	$(BIN)/python -m tests.secc.run_ev $(EV_ARGS)

clean:
	rm -rf $(VENV) $(SECC_VENV) build *.egg-info
