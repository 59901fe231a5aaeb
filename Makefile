# Two commands do all the set-up on a fresh machine:
#   make serve   start the service on configs/local.yaml (http://127.0.0.1:8000)
#   make test    lint and run every test (unit and a real Ray Serve on localhost;
#                starts PostgreSQL and Redis on 127.0.0.1 when they are not running)
#   make test-fast   the unit tests alone (no Ray), for the edit-test loop
#   make bench-cpu   sweep a tiny model on this CPU: benchmarks/results/<date>-cpu-<model>.*

PYTHON ?= python3
VENV ?= .venv
# The CPU build where one is offered; on a GPU host: make TORCH_SPEC=torch serve
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/local.yaml

BIN := $(VENV)/bin

.PHONY: install serve test test-fast test-reliability lint services bench-cpu bench-wheels

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Ray's process settings (HAProxy in front, gRPC between replicas, replicas at niceness 0)
# are configs/ray.env's and take precedence over the caller's environment; RAY_ENV=<file>
# starts Ray with another set (benchmarks/serve_flags.sh compares them).
RAY_ENV ?= configs/ray.env
serve: install
	env $$(grep -v '^#' $(RAY_ENV)) $(BIN)/serve run $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# PostgreSQL and Redis on 127.0.0.1 for the tests: used when running, started if not.
services:
	bash .ci/services.sh

test: lint services
	$(BIN)/python -m pytest -q

test-fast: install services
	$(BIN)/python -m pytest -q tests/unit

# The reliability campaign at full length (`make test` runs its short form): a 10-minute
# soak, crashes, lost dependencies; figures in benchmarks/results/reliability.json and
# the README's table.
RELIABILITY_REPORT ?= benchmarks/results/reliability.json
test-reliability: install services
	RELIABILITY_LONG=1 RELIABILITY_REPORT=$(RELIABILITY_REPORT) $(BIN)/python -m pytest -q -s tests/reliability
	$(BIN)/python -m tests.reliability.figures $(RELIABILITY_REPORT)

# The CPU sweep: our service, the naive server and the raw pipeline with a tiny
# random-weight model; JSON, Markdown and PNG plots in benchmarks/results/.
BENCH_MODEL ?= sd-tiny
BENCH_ARGS ?= --size 64x64 --steps 4 --concurrency 1 2 4 8 16 --batch-sizes 1 4 8 \
	--requests 48 --rates 10 20 --open-requests 40 --raw-calls 8 --threads 1
bench-cpu: install
	$(BIN)/python -m benchmarks.sweep --config $(CONFIG) --model $(BENCH_MODEL) $(BENCH_ARGS) \
		--fresh --notes "tiny random-weight model (noise images) on this CPU: serving overhead, not a card"

# Wheels for the GPU machine (Python 3.12, no network), in parts that fit one device call.
bench-wheels: install
	$(BIN)/python benchmarks/gpu/prepare_wheels.py
