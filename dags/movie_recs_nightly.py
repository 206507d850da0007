"""
### movie_recs_nightly

Retrains the ALS movie recommender every night and publishes its recommendations to the
SQLite database that datasette serves. One task per recjobs job:

`load` -> `split` -> `train` -> `evaluate` -> `precompute`

- **load** validates the CSVs in `data_dir` and starts the run record (`model_runs`).
- **split**, **train**, **evaluate** write `artifacts/<run_id>/` and the run's metrics.
- **precompute** stores the top-k movies per user and, if the run passes the quality gate,
  publishes it in the same transaction (updates the `movie_recs_db` asset). A run the gate
  rejects ends with `precompute` *skipped*: the published recommendations stay as they were.

The recjobs run id is derived from the Airflow run id, so clearing a task or the whole run
redoes the same run: the same tables, never a duplicate row. A failed task is recorded in
`model_runs` (status `failed`) and never touches the run readers are served.

Params (defaults come from the `RECJOBS_*` settings): `factors`, `regularization`,
`iterations`, `k`, `data_dir`. The database and artifacts folders come from `RECJOBS_DB`
and `RECJOBS_ARTIFACTS`; relative paths are taken from the project folder.
Retry delay: Airflow's `[core] default_task_retry_delay` (set in the project's `airflow.env`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from pathlib import Path

from airflow.sdk import Asset, Param, dag, get_current_context, task

from recjobs import settings as recjobs_settings

PROJECT = Path(__file__).resolve().parent.parent
PATH_SETTINGS = ("data_dir", "db", "artifacts")
RUN_PARAMS = ("factors", "regularization", "iterations", "k", "data_dir")
# Testing aid: "<task>" fails that task before its job on every try; "<task>@<n>" fails it
# after its job on its first n tries (a worker lost after writing).
FAULT_ENV = "MOVIE_RECS_FAULT"


def configured_settings(**overrides) -> recjobs_settings.Settings:
    """The RECJOBS_* settings with run params on top; relative paths are in the project."""
    settings = recjobs_settings.from_env(**overrides)
    return settings.replace(**{name: PROJECT / getattr(settings, name) for name in PATH_SETTINGS
                               if not getattr(settings, name).is_absolute()})


def run_params() -> dict[str, Param]:
    configured, help_texts = configured_settings(), recjobs_settings.setting_help()
    params = {}
    for name in RUN_PARAMS:
        default, help_text = help_texts[name]
        value = getattr(configured, name)
        if isinstance(default, Path):
            params[name] = Param(str(value), type="string", minLength=1, description=help_text)
        else:
            kind = {int: "integer", float: "number"}[type(default)]
            params[name] = Param(value, type=kind, description=help_text)
    return params


def recjobs_run_id(airflow_run_id: str) -> str:
    """A valid recjobs run id, the same for every try of the same Airflow run."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", airflow_run_id).strip("-_.")
    if clean == airflow_run_id and len(clean) <= 100:
        return clean
    digest = hashlib.sha1(airflow_run_id.encode()).hexdigest()[:8]
    return f"{clean[:90]}-{digest}".lstrip("-_.")


def inject_fault(task_id: str, try_number: int, after_job: bool) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    name, _, tries = spec.partition("@")
    if name != task_id:
        return
    if (not tries and not after_job) or (tries and after_job and try_number <= int(tries)):
        raise RuntimeError(f"fault injected by {FAULT_ENV}={spec} into {task_id} try {try_number}")


def run_step(step: str) -> dict:
    """Run recjobs.<step>.<step> for this Airflow run; the small result goes to XCom."""
    import dataclasses
    import importlib
    import logging

    from recjobs import runs

    context = get_current_context()
    settings = configured_settings(**context["params"])
    run_id = recjobs_run_id(context["run_id"])
    try_number = context["ti"].try_number
    job = getattr(importlib.import_module(f"recjobs.{step}"), step)
    try:
        inject_fault(step, try_number, after_job=False)
        result = job(settings, run_id)
        inject_fault(step, try_number, after_job=True)
    except Exception as e:
        try:
            runs.mark_failed(settings, run_id, f"{step} try {try_number}: {type(e).__name__}: {e}")
        except Exception:
            logging.getLogger(__name__).exception("could not record the failure of run %s", run_id)
        raise
    return dataclasses.asdict(result)


RECS_DB = Asset(name="movie_recs_db", uri=f"file://{configured_settings().db}")


@dag(
    dag_id="movie_recs_nightly",
    schedule="30 2 * * *",  # 02:30 UTC every night
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=6),
    default_args={"retries": 2, "execution_timeout": dt.timedelta(hours=1)},
    params=run_params(),
    tags=["movie-recs", "nightly"],
    doc_md=__doc__,
)
def movie_recs_nightly():
    @task(task_id="load")
    def load_task() -> dict:
        return run_step("load")

    @task(task_id="split")
    def split_task() -> dict:
        return run_step("split")

    @task(task_id="train", execution_timeout=dt.timedelta(hours=3))
    def train_task() -> dict:
        return run_step("train")

    @task(task_id="evaluate")
    def evaluate_task() -> dict:
        return run_step("evaluate")

    @task(task_id="precompute", outlets=[RECS_DB])
    def precompute_task() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        result = run_step("precompute")
        if result["status"] != "published":
            raise AirflowSkipException(f"run {result['run_id']} not published: {result['reason']}")
        return result

    load_task() >> split_task() >> train_task() >> evaluate_task() >> precompute_task()


movie_recs_nightly()
