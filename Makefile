# Two commands do all the set-up on a fresh machine:
#   make serve   start the service on configs/local.yaml (http://127.0.0.1:8000)
#   make test    lint and run every test (unit and a real Ray Serve on localhost)

PYTHON ?= python3
VENV ?= .venv
# The CPU build where one is offered; on a GPU host: make TORCH_SPEC=torch serve
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/local.yaml

BIN := $(VENV)/bin

.PHONY: install serve test lint bench-cpu

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

serve: install
	$(BIN)/serve run $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q
