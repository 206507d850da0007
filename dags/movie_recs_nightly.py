"""
### movie_recs_nightly

Retrains the ALS movie recommender every night and publishes its recommendations to the
SQLite database that datasette serves. One task per recjobs job, as `recjobs run`:

`load` -> `split` -> `train` -> `evaluate` -> `precompute` -> `evaluate_cold_start`

- **load** validates the CSVs in `data_dir` and starts the run record (`model_runs`).
- **split**, **train**, **evaluate** write `artifacts/<run_id>/` and the run's metrics.
- **precompute** stores the top-k movies per user and, if the run passes the quality gate,
  publishes it in the same transaction (an event of the asset `file://<database>`). A run the
  gate rejects ends with `precompute` *skipped*: the published recommendations stay as they were.
- **evaluate_cold_start** measures the cold-start answers of the run (it gates nothing).

The recjobs run id is derived from the Airflow run id, so clearing a task or the whole run
redoes the same run: the same tables, never a duplicate row. A failed task is recorded in
`model_runs` (status `failed`) and never touches the run readers are served.

Params (defaults from the `RECJOBS_*` settings): `factors`, `regularization`, `iterations`,
`k`, `data_dir`. The database and artifacts folders come from `RECJOBS_DB` and
`RECJOBS_ARTIFACTS`; relative paths are taken from the project folder. The retry delay is
Airflow's `[core] default_task_retry_delay` (the project's `airflow.env` sets it).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from movie_recs_common import recs_db_asset, run_step, setting_params


@dag(
    dag_id="movie_recs_nightly",
    schedule="30 2 * * *",  # 02:30 UTC every night
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=6),
    default_args={"retries": 2, "execution_timeout": dt.timedelta(hours=1)},
    params=setting_params(("factors", "regularization", "iterations", "k", "data_dir")),
    tags=["movie-recs", "nightly"],
    doc_md=__doc__,
)
def movie_recs_nightly():
    @task(multiple_outputs=False)
    def load() -> dict:
        return run_step("load")

    @task(multiple_outputs=False)
    def split(loaded: dict) -> dict:
        return run_step("split", loaded)

    @task(multiple_outputs=False, execution_timeout=dt.timedelta(hours=3))
    def train(split_done: dict) -> dict:
        return run_step("train", split_done)

    @task(multiple_outputs=False)
    def evaluate(trained: dict) -> dict:
        return run_step("evaluate", trained)

    @task(multiple_outputs=False, outlets=[recs_db_asset()])
    def precompute(evaluated: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        result = run_step("precompute", evaluated)
        if result["status"] != "published":
            raise AirflowSkipException(f"run {result['run_id']} not published: {result['reason']}")
        return result

    @task(multiple_outputs=False, trigger_rule="none_failed")
    def evaluate_cold_start(published: dict | None) -> dict:
        # after a rejected run `published` is None (precompute skipped): the run id is derived again
        return run_step("cold_start_eval", published, "evaluate_cold_start")

    evaluate_cold_start(precompute(evaluate(train(split(load())))))


dag = movie_recs_nightly()

if __name__ == "__main__":
    dag.test()
