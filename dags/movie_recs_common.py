"""What both movie-recs DAGs share: the settings, the run id and running one recjobs job.

Light on purpose (no numpy, pandas or implicit at import time): the DAG files import it
while Airflow parses them. Listed in .airflowignore, as it defines no DAG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib
import logging
import os
import re
from pathlib import Path

from airflow.sdk import Asset, Param, get_current_context

from recjobs import settings as recjobs_settings

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parent.parent
# Testing aid, a comma-separated list: "<task>" fails that task before its job on every try;
# "<task>@<n>" fails it after its job on its first n tries (a worker lost after writing).
FAULT_ENV = "MOVIE_RECS_FAULT"


def configured_settings(**overrides) -> recjobs_settings.Settings:
    """The RECJOBS_* settings with run params on top; relative paths are in the project folder."""
    settings = recjobs_settings.from_env(**overrides)
    rules = settings.rules and str(PROJECT / settings.rules)  # a relative rules file: in the project too
    return settings.replace(
        **{
            name: PROJECT / getattr(settings, name)
            for name in recjobs_settings.PATH_SETTINGS
            if not getattr(settings, name).is_absolute()
        },
        rules=rules or None,
    )


def recs_db_asset() -> Asset:
    """The published database, as the asset downstream DAGs can be scheduled on. Named by its
    URI: a database moved elsewhere is another asset (one name with a new URI would make
    Airflow mark the asset inactive and fail the task)."""
    return Asset(uri=f"file://{configured_settings().db}")


def setting_params(names) -> dict[str, Param]:
    """Run params for the named settings: default from the configuration, help from the settings."""
    configured, help_texts = configured_settings(), recjobs_settings.setting_help()
    params = {}
    for name in names:
        default, help_text = help_texts[name]
        value = getattr(configured, name)
        if isinstance(default, Path):
            params[name] = Param(str(value), type="string", minLength=1, description=help_text)
        elif name == "engine":
            params[name] = Param(value, type="string", enum=list(recjobs_settings.ENGINES), description=help_text)
        elif isinstance(default, str):
            params[name] = Param(value, type="string", minLength=1, description=help_text)
        elif isinstance(default, bool):
            params[name] = Param(value, type="boolean", description=help_text)
        else:
            kind = {int: "integer", float: "number"}[type(default)]
            params[name] = Param(value, type=kind, description=help_text)
    return params


def retry_delay() -> dt.timedelta:
    """Airflow's [core] default_task_retry_delay, given to the tasks explicitly: a mapped task
    is otherwise retried after a built-in 300 s (Airflow 3.3's serialized mapped operators)."""
    from airflow.sdk.configuration import conf

    return dt.timedelta(seconds=conf.getint("core", "default_task_retry_delay", fallback=300))


def recjobs_run_id(airflow_run_id: str) -> str:
    """A valid recjobs run id, the same for every try of the same Airflow run."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", airflow_run_id).strip("-_.")
    if clean == airflow_run_id and len(clean) <= 100:
        return clean
    digest = hashlib.sha1(airflow_run_id.encode()).hexdigest()[:8]
    return f"{clean[:90]}-{digest}".lstrip("-_.")


def inject_fault(task_id: str, try_number: int, after_job: bool) -> None:
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        name, _, tries = spec.strip().partition("@")
        if name != task_id:
            continue
        if (not tries and not after_job) or (tries and after_job and try_number <= int(tries)):
            raise RuntimeError(f"fault injected by {FAULT_ENV}={spec} into {task_id} try {try_number}")


def shard_numbers() -> list[int]:
    """0 .. score_shards - 1 for this run's settings: what the nightly DAG maps score_shard over."""
    return list(range(configured_settings(**get_current_context()["params"]).score_shards))


def mark_run_failed(context) -> None:
    """The DAG's failure callback: a DAG run that failed (a task killed or out of tries, the run
    timed out) leaves no recjobs run 'running'; a run a step already ended keeps its reason."""
    from recjobs.storage import runs

    airflow_run_id = context.get("run_id") or context["dag_run"].run_id
    settings = configured_settings(**(context.get("params") or {}))
    reason = f"the Airflow run {airflow_run_id} failed: {context.get('reason') or 'a task failed'}"
    if runs.fail_if_running(settings, recjobs_run_id(airflow_run_id), reason):
        log.warning("marked the recjobs run of %s failed: %s", airflow_run_id, reason)


def run_step(
    module: str, upstream: dict | None = None, function: str | None = None, lock: bool = True, **arguments
) -> dict:
    """Run recjobs.jobs.<module>.<function> (default: the module's name) on this Airflow run's recjobs
    run: the upstream task's run id, else one derived from the Airflow run id (the same on
    every try), holding the database's run lock (runs.run_lock) unless `lock` is False (score
    shards, which run side by side and write only their own files). A failure is recorded by the
    recjobs rule (runs.failure_recorded); bad input or settings fail the task at once. The small
    result goes to XCom."""
    from airflow.sdk.exceptions import AirflowFailException

    from recjobs.errors import ConfigError, DataError
    from recjobs.storage import runs

    function = function or module
    context = get_current_context()
    task_id, try_number = context["ti"].task_id, context["ti"].try_number
    settings = configured_settings(**context["params"])
    run_id = upstream["run_id"] if upstream else recjobs_run_id(context["run_id"])
    runs.lower_priority(settings)  # before the job's imports: threads started later inherit it
    job = getattr(importlib.import_module(f"recjobs.jobs.{module}"), function)
    try:
        locked = runs.run_lock(settings, run_id) if lock else contextlib.nullcontext()
        with locked, runs.failure_recorded(settings, run_id, function, attempt=try_number):
            inject_fault(task_id, try_number, after_job=False)
            result = job(settings, run_id, **arguments)
            inject_fault(task_id, try_number, after_job=True)
    except (DataError, ConfigError) as e:  # a retry would fail the same way
        raise AirflowFailException(str(e)) from e
    return dataclasses.asdict(result)
