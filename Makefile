# The two commands a new user runs:  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data/ml-latest-small
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup data run test test-slow clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[airflow,serve,test]'
	touch $@

# ml-latest-small into data_small/: a local copy if there is one, else GroupLens. Both are SHA-256 checked.
data: setup data_small/ratings.csv

data_small/ratings.csv:
	@if [ -d "$(SHARED_DATA)" ]; then $(BIN)/recjobs fetch-data --from "$(SHARED_DATA)"; \
	else $(BIN)/recjobs fetch-data; fi

run: setup data
	$(BIN)/recjobs run

test: setup
	$(BIN)/pytest -m "not slow"

test-slow: setup
	$(BIN)/pytest -m slow

# Median whole-process time of `recjobs cold-start` (20 runs) and of the in-process function (1000 calls).
.PHONY: bench-cold-start
bench-cold-start: setup data
	$(BIN)/python tests/benchmarks/bench_cold_start.py --data-dir data_small

# Requests/s and p50/p99 latency of recommendations_for_user at concurrency 8 (median of 3 x 10 s).
.PHONY: bench-serve
bench-serve: setup
	@test -f artifacts/recs.db || $(MAKE) run
	$(BIN)/python tests/benchmarks/bench_serve.py --db artifacts/recs.db

clean:
	rm -rf $(VENV) artifacts/* data_small/*.csv
