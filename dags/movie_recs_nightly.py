"""
### movie_recs_nightly

Retrains the ALS movie recommender every night and publishes its recommendations to the
SQLite database that datasette serves. One task per recjobs job, as `recjobs run`:

`load` -> `split` -> `train` -> `evaluate` and `score_shard` (mapped) -> `precompute` -> `evaluate_cold_start`

- **load** validates the CSVs in `data_dir` and starts the run record (`model_runs`).
- **split**, **train**, **evaluate** write `artifacts/<run_id>/` and the run's metrics.
- **score_shard** is mapped over `score_shards` user ranges (Airflow dynamic task mapping), beside
  evaluate: each writes its users' top-k movies to a staging file. The executor spreads them over cores
  (LocalExecutor) or workers (CeleryExecutor, KubernetesExecutor) sharing the artifacts folder.
- **precompute** stores every shard's top-k movies per user and, if the run passes the quality gate,
  publishes it in the same transaction (an event of the asset `file://<database>`). A run the
  gate rejects ends with `precompute` *skipped*: the published recommendations stay as they were.
- **evaluate_cold_start** measures the cold-start answers of the run (it gates nothing).

The recjobs run id is derived from the Airflow run id, so clearing a task or the whole run
redoes the same run: the same tables, never a duplicate row. A failed task is recorded in
`model_runs` (status `failed`) and never touches the run readers are served.

The night fits the method once: split holds out the evaluated users' test items (and, on a usual
night, a small cold-start draw), train fits on the rest and folds the held-out users back in
for the published model. A full night (the first, any whose model settings changed, and every
`full_evaluation_every` nights, or when `full_evaluation` is true) also fits the reference
recipe and the cold-start protocol's own model.

Params (defaults from the `RECJOBS_*` settings): `factors`, `regularization`, `iterations`,
`k`, `data_dir`, `engine` (`implicit`, or `spark`: train runs its heavy parts in Spark at
`spark_master`), `score_shards`, `full_evaluation_every`, `full_evaluation`. The database and
artifacts folders come from `RECJOBS_DB` and `RECJOBS_ARTIFACTS`; relative paths are taken from
the project folder. The retry delay is
Airflow's `[core] default_task_retry_delay` (the project's `airflow.env` sets it).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from movie_recs_common import mark_run_failed, recs_db_asset, retry_delay, run_step, setting_params, shard_numbers


@dag(
    dag_id="movie_recs_nightly",
    schedule="30 2 * * *",  # 02:30 UTC every night
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=6),
    default_args={"retries": 2, "retry_delay": retry_delay(), "execution_timeout": dt.timedelta(hours=1)},
    params=setting_params(
        (
            "factors",
            "regularization",
            "iterations",
            "k",
            "data_dir",
            "engine",
            "score_shards",
            "full_evaluation_every",
            "full_evaluation",
        )
    ),
    on_failure_callback=mark_run_failed,  # a killed task leaves no run 'running'
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

    @task
    def plan_shards(trained: dict) -> list[int]:
        return shard_numbers()

    @task(multiple_outputs=False)
    def score_shard(trained: dict, shard: int) -> dict:
        return run_step("score_shard", trained, lock=False, shard=shard)

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

    trained = train(split(load()))
    scored = score_shard.partial(trained=trained).expand(shard=plan_shards(trained))  # beside evaluate
    published = precompute(evaluate(trained))
    scored >> published
    evaluate_cold_start(published)


dag = movie_recs_nightly()

if __name__ == "__main__":
    dag.test()
