# `make demo` and `make test` work on a fresh Debian machine: they install what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What builds need (compilers with TSAN runtimes, CPython's build dependencies) and what
# the tests use (chromium renders the HTML report; iproute2 and util-linux make the test
# hosts of tests/hosts.py: network namespaces, unshare).
APT_BASE := gcc g++ make git patch xz-utils ca-certificates pkg-config ccache \
	libffi-dev zlib1g-dev libssl-dev libbz2-dev liblzma-dev libsqlite3-dev
APT_CLANG := clang-19 libclang-rt-19-dev llvm-19
APT_TEST := chromium iproute2 util-linux
DEMO_REPO := demo-work/ticketq
PYTEST_ARGS ?=

.PHONY: all setup apt venv demo demo-repo test test-fast test-stats lint format bench clean

all: setup

apt:
	@scripts/ensure-apt.sh $(APT_BASE) $(APT_CLANG)

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

setup: apt venv

demo-repo: setup
	$(BIN)/python demo/make_repo.py $(DEMO_REPO)

# The main job on the bundled race: stress it, bisect the fix, write the report.
demo: demo-repo
	$(BIN)/repro recipe validate recipes/demo.yaml
	$(BIN)/repro stress recipes/demo.yaml --runs 200 --jobs 2 --runs-dir demo-work/runs \
		--json-out demo-work/stress.json || test $$? -eq 1
	$(BIN)/repro bisect recipes/demo.yaml --jobs 2 --runs-dir demo-work/runs \
		--calibration-from demo-work/stress.json \
		--json-out demo-work/bisect.json --report demo-work/report.md
	@echo
	@echo "report: demo-work/report.md (also: repro report demo-work/runs/<dir> --format html)"

# Everything but the long statistical simulations; the slow tests build CPython with TSAN
# (minutes the first time on a machine, cached afterwards in ~/.cache/repro-tests).
# Two pytest-xdist workers: most slow tests wait on subprocesses, and the suite took 25 min
# sequentially against 16 min with two on a 2-core machine. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: setup
	@scripts/ensure-apt.sh $(APT_TEST)
	$(BIN)/python -m pytest -ra --durations=15 -n $(TEST_WORKERS) -m "not stats" $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -ra -m "not slow and not stats" $(PYTEST_ARGS)

test-stats: setup
	$(BIN)/python -m pytest -ra -s -m stats $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check repro tests bench demo scripts
	$(BIN)/ruff format --check repro tests bench demo scripts
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format repro tests bench demo
	$(BIN)/ruff check --fix repro tests bench demo

bench: venv
	$(BIN)/python bench/bench_stress.py
	$(BIN)/python bench/bench_bisect.py
	$(BIN)/python bench/bench_builds.py

clean:
	rm -rf demo-work repro-runs .pytest_cache .mypy_cache .ruff_cache
