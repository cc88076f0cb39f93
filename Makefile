# The two set-up commands are `make demo` and `make test`; both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AION_HOME ?= $(CURDIR)/.aion
export DAGSTER_HOME ?= $(AION_HOME)/dagster
# Keep the CPU torch build and stop transformers from looking for torchvision or the hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test ui install clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build first: once torch==2.13.0 is in place nothing else pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
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
