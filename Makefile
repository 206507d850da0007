# The two commands a new user runs:  `make run`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data/ml-latest-small
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup setup-spark setup-cluster data run test test-slow test-pythons test-reliability test-spark test-cluster lint format clean

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

# The nightly DAG once through Airflow (the project's airflow.env), then datasette on the result.
run: nightly
	@echo "Serving artifacts/recs.db with datasette (Ctrl-C stops it); \`make airflow\` starts the Airflow UI."
	$(BIN)/recjobs serve

# The default suite: ruff, then pytest over both cores (one worker per test file, so a file's
# module fixtures are built once).
PYTEST_WORKERS ?= auto
test: setup lint
	$(BIN)/pytest -m "not slow and not reliability and not spark and not cluster" -n $(PYTEST_WORKERS) --dist loadfile --durations=20

test-slow: setup
	$(BIN)/pytest -m slow

# Crashes, I/O faults, bad input files and hostile clients, in one process; prints its counts.
# The default suite on every Python 3.11-3.13 found here (.ci/pythons), each in its own
# .venv-3.X, other than the one `make test` used.
test-pythons:
	@current=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	.ci/pythons | while read -r version interpreter; do \
		[ "$$version" = "$$current" ] && continue; \
		echo "== Python $$version ($$interpreter)"; \
		$(MAKE) test PYTHON="$$interpreter" VENV=".venv-$$version" </dev/null || exit 1; \
	done

# engine=spark: the spark extra (pyspark runs on a Java 17+ runtime: `java -version`).
setup-spark: $(VENV)/.installed-spark

$(VENV)/.installed-spark: $(VENV)/.installed pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e '.[airflow,serve,test,spark]'
	touch $@

# Spark in local mode: its item-item counts, both engines side by side, the DAG with engine=spark.
test-spark: setup-spark data
	$(BIN)/pytest -m spark tests/test_spark.py -n 0 --durations=10

# Airflow as a cluster: the cluster extra, and PostgreSQL and Redis servers (Debian's packages).
setup-cluster: $(VENV)/.installed-cluster

$(VENV)/.installed-cluster: $(VENV)/.installed pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e '.[airflow,serve,test,cluster]'
	touch $@

# Postgres, Redis, the api-server, scheduler, dag-processor and two Celery workers on loopback.
test-cluster: setup-cluster data
	$(BIN)/pytest -m cluster tests/test_airflow_cluster.py -n 0 --durations=10

test-reliability: setup
	$(BIN)/pytest -m reliability tests/reliability -n 0 --durations=10

# ruff: the rules and the format are in pyproject.toml ([tool.ruff]); `make format` applies them.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Median whole-process time of `recjobs cold-start` (20 runs) and of the in-process function (1000 calls).
.PHONY: bench-cold-start
bench-cold-start: setup data
	$(BIN)/python tests/benchmarks/bench_cold_start.py --data-dir data_small

# Recall@10 / NDCG@10 of the cold-start blend per popularity prior and N liked movies, on held-out users
# drawn apart from the ones evaluate_cold_start reports; prints the table and the chosen prior (BLEND_PRIOR).
.PHONY: choose-cold-start-prior
choose-cold-start-prior: setup data
	$(BIN)/python tests/benchmarks/choose_cold_start_prior.py --data-dir data_small

# Requests/s and p50/p99 of recommendations_for_user at concurrency 8 (wrk, median of 3 x 10 s): one
# server process against several, plain, during a publish, and with a caching (ETag) client.
.PHONY: bench-serve
bench-serve: setup
	@test -f artifacts/recs.db || $(MAKE) nightly
	$(BIN)/python tests/benchmarks/bench_serve.py --db artifacts/recs.db

# Seconds from a ratings file landing in incoming/ to the served JSON changing (p50, p95, max), with
# the real scheduler running movie_recs_refresh every minute: 1,000 ratings of 500 users in 20 files.
REFRESH_DB ?= artifacts/recs.db
.PHONY: bench-refresh-latency
bench-refresh-latency: setup
	@test -f $(REFRESH_DB) || $(MAKE) nightly
	$(BIN)/python tests/benchmarks/bench_refresh_latency.py --db $(REFRESH_DB)

# `recjobs refresh` run directly: 1,000 ratings from 500 users landing at once, medians of 5
# (docs/refresh.md); REFRESH_DB=artifacts/bench-scale/25M/recs.db for the 25M figure.
.PHONY: bench-refresh
bench-refresh: setup
	@test -f $(REFRESH_DB) || $(MAKE) nightly
	$(BIN)/python tests/benchmarks/bench_refresh.py --db $(REFRESH_DB)

# What the reasons (because_movie_id) cost beside scoring the same lists, on a sample of users
# (docs/quality.md); REFRESH_DB=artifacts/bench-scale/25M/recs.db for the 25M figure.
.PHONY: bench-reasons
bench-reasons: setup
	@test -f $(REFRESH_DB) || $(MAKE) nightly
	$(BIN)/python tests/benchmarks/bench_reasons.py --db $(REFRESH_DB)

# What the nightly content step (new and thin movies scored from content) costs on a run
# (docs/quality.md); REFRESH_DB=artifacts/bench-scale/25M/recs.db for the 25M figure.
.PHONY: bench-content
bench-content: setup
	@test -f $(REFRESH_DB) || $(MAKE) nightly
	$(BIN)/python tests/benchmarks/bench_content.py --db $(REFRESH_DB)

# A first, a usual and a full night per step (seconds, peak RSS) on ml-latest-small and synthetic 1M
# and 5M sets (`recjobs synth`), beside the reference approach; SIZES=small,1M,5M,25M for
# MovieLens-25M's shape; BASELINE=DIR (a git worktree of the previous code) runs it side by side.
SIZES ?= small,1M,5M
BASELINE ?=
.PHONY: bench-scale
bench-scale: setup data
	$(BIN)/python tests/benchmarks/bench_scale.py --sizes $(SIZES) $(if $(BASELINE),--baseline $(BASELINE))

# The two engines side by side (each step's seconds and peak RSS, Recall@10 and NDCG@10) on
# ml-latest-small and synthetic sets; ENGINE_SIZES=small,1M,5M,25M:implicit for more (SIZE:ENGINE: one engine).
ENGINE_SIZES ?= small,1M
.PHONY: bench-engines
bench-engines: setup-spark data
	$(BIN)/python tests/benchmarks/bench_engines.py --sizes $(ENGINE_SIZES)

# The trend settings chosen on earlier backtest nights only (prints a Markdown table; docs/quality.md).
.PHONY: choose-nightly-settings
choose-nightly-settings: setup data
	$(BIN)/python tests/benchmarks/choose_nightly_settings.py --data-dir data_small

# The blend choice's rule (window, windows, minimum user-windows) chosen on earlier backtest nights
# of ml-latest-small and a time-dynamic synthetic set (prints a Markdown table; docs/quality.md).
.PHONY: choose-blend-rule
choose-blend-rule: setup data
	$(BIN)/python tests/benchmarks/choose_blend_rule.py --data-dir data_small

# The diversity knob's price: Recall@10, NDCG@10, intra-list diversity and genres per list of the
# method's top 30 re-ranked to 10 by MMR at each setting, on the backtest's nights (docs/quality.md).
.PHONY: choose-diversity
choose-diversity: setup data
	$(BIN)/python tests/benchmarks/choose_diversity.py --data-dir data_small

# What each lever of the method is worth on the validation items (docs/quality.md).
.PHONY: bench-levers
bench-levers: setup data
	$(BIN)/python tests/benchmarks/levers.py --data-dir data_small

# A second night started warm against from random factors (docs/scaling.md); after `make bench-scale`.
WARM_FULL ?= artifacts/bench-scale/data-1M
WARM_BEFORE ?= artifacts/bench-scale/data-1M-day-before
.PHONY: bench-warm-start
bench-warm-start: setup
	bash tests/benchmarks/compare_warm_start.sh $(WARM_FULL) $(WARM_BEFORE) artifacts/bench-warm-start

# One fit's sequence matrix, and a first night's ratings write, on a run's folder (docs/scaling.md).
RUN_DIR ?= artifacts/bench-scale/25M/artifacts/night1
.PHONY: bench-sequence bench-store-ratings
bench-sequence: setup
	$(BIN)/python tests/benchmarks/sequence_blocks.py --run-dir $(RUN_DIR)
bench-store-ratings: setup
	$(BIN)/python tests/benchmarks/store_ratings.py --run-dir $(RUN_DIR)

# Spark ALS blocks and blockSize in local mode (docs/scaling.md).
SPARK_DATA ?= artifacts/bench-scale/data-1M
.PHONY: bench-spark-blocks
bench-spark-blocks: setup-spark
	$(BIN)/python tests/benchmarks/spark_blocks.py --data $(SPARK_DATA)

# docs/configuration.md's settings table, written from recjobs.settings (tests/test_docs.py checks it).
.PHONY: docs-settings
docs-settings: setup
	$(BIN)/python -c 'import pathlib, recjobs.settings as s; p = pathlib.Path("docs/configuration.md"); \
	p.write_text(s.with_settings_table(p.read_text()))'

# ---- Airflow: settings in airflow.env; AIRFLOW_HOME and the metadata database (SQLite) in artifacts/airflow
AIRFLOW_DIR := $(CURDIR)/artifacts/airflow
AIRFLOW_PORT ?=
WITH_AIRFLOW = set -a && . ./airflow.env && set +a && \
	export PATH="$(abspath $(BIN)):$$PATH" AIRFLOW_HOME="$(AIRFLOW_DIR)" AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" && \
	$(if $(AIRFLOW_PORT),export AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(AIRFLOW_PORT)/execution/ &&)

.PHONY: nightly airflow
# One run of movie_recs_nightly with `airflow dags test` (no scheduler needed); its log goes to a file.
nightly: setup data
	@mkdir -p "$(AIRFLOW_DIR)"
	@$(WITH_AIRFLOW) airflow db migrate >"$(AIRFLOW_DIR)/db-migrate.log" 2>&1 \
	|| { tail -20 "$(AIRFLOW_DIR)/db-migrate.log"; exit 1; }
	@echo "airflow dags test movie_recs_nightly (log: $(AIRFLOW_DIR)/nightly.log) ..."
	@$(WITH_AIRFLOW) airflow dags test movie_recs_nightly >"$(AIRFLOW_DIR)/nightly.log" 2>&1 \
	|| { grep -E "ERROR|Error|rror:" "$(AIRFLOW_DIR)/nightly.log" | tail -5; echo "movie_recs_nightly failed; see $(AIRFLOW_DIR)/nightly.log"; exit 1; }
	@grep -o "DagRun Finished: .*run_duration=[0-9.]*, state=[a-z]*" "$(AIRFLOW_DIR)/nightly.log" | sed 's/logical_date=.*run_duration/run_duration/'
	@$(BIN)/recjobs status

# Airflow for real (api-server, scheduler, dag-processor, triggerer): UI at http://127.0.0.1:8080
# (AIRFLOW_PORT=... to change it). Ctrl-C stops it.
airflow: setup data
	@mkdir -p "$(AIRFLOW_DIR)"
	$(WITH_AIRFLOW) airflow standalone

clean:
	rm -rf $(VENV) .venv-3.* artifacts/* data_small/*.csv
