# The two set-up commands are `make demo` and `make test`; both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to its CPU build (2.13.0+cpu in constraints.txt); TORCH_INDEX can name pip options (an index
# or find-links) where that wheel is found on another machine.
TORCH_INDEX ?=
export AION_HOME ?= $(CURDIR)/.aion
# Keep the CPU torch build and stop transformers from looking for torchvision or the hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test ui install clean

# constraints.txt is the tested dependency set (pip freeze of a working .venv, Dagster pinned at 1.13.27).
$(STAMP): pyproject.toml setup.py constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build first: once torch==2.13.0 is in place nothing else pulls a CUDA build.
	$(BIN)/pip install --quiet -c constraints.txt $(TORCH_INDEX) torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/aion demo

test: $(STAMP)
	$(BIN)/ruff check aion_assets aion_assets_tests
	$(BIN)/python -m pytest -n 2 --dist loadfile --timeout 900 aion_assets_tests

ui: $(STAMP)
	$(BIN)/aion ui

clean:
	rm -rf $(AION_HOME)
