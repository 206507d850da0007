"""The nightly DAG under faults, with `airflow dags test`: a task that fails once after writing
is retried into the same run; a step that fails on every try, or bad input, leaves readers
served the run they had. (Split from test_dags.py so the two files run on separate workers.)"""

from __future__ import annotations

import shutil

import pytest

from recjobs import pipeline
from recjobs.settings import Settings
from support import (
    SLICE_USERS,
    SMALL_RUN,
    copy_db,
    dags_test,
    last_dag_run,
    mapped_tries,
    migrated_airflow_home,
    movielens_slice,
    new_airflow_home,
    newest_run,
    query,
    require_shared_data,
    served,
    tries,
)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, worker_id):
    return migrated_airflow_home(tmp_path_factory, worker_id)


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory):
    return movielens_slice(tmp_path_factory.mktemp("slice") / "ml-slice")


@pytest.fixture(scope="module")
def served_slice(data_slice, tmp_path_factory):
    """A database already serving a run of the slice (made by `recjobs run`, not Airflow)."""
    root = tmp_path_factory.mktemp("served")
    settings = Settings(data_dir=data_slice, db=root / "recs.db", artifacts=root / "artifacts", **SMALL_RUN)
    assert pipeline.run(settings, "served").precompute.status == "published"
    return settings.db


def test_a_retried_task_leaves_no_duplicate_rows(migrated, data_slice, tmp_path):
    """load, each score shard and precompute fail once right after writing; their retries redo
    the same run, and precompute publishes the shards' files."""
    db, airflow_home = tmp_path / "recs.db", new_airflow_home(migrated, tmp_path / "airflow")
    faults = "load@1,score_shard@1,precompute@1"
    done, _ = dags_test(airflow_home, tmp_path, {**SMALL_RUN, "score_shards": 2}, data_slice, fault=faults)
    assert done.returncode == 0, done.stdout[-5000:]
    airflow_run_id, state = last_dag_run(airflow_home)
    assert state == "success"
    task_tries = tries(airflow_home, airflow_run_id)
    assert task_tries["load"] == (2, "success") and task_tries["precompute"] == (2, "success")
    assert task_tries["train"] == (1, "success")
    assert mapped_tries(airflow_home, airflow_run_id, "score_shard") == {0: (2, "success"), 1: (2, "success")}
    assert "2 of 2 shards from score_shard files" in done.stdout

    run = newest_run(db)
    assert run["status"] == "published"
    assert query(db, "SELECT COUNT(*) FROM model_runs") == [(1,)]
    assert query(db, "SELECT COUNT(*) FROM ratings")[0][0] == run["n_ratings"]
    n_movies = len((data_slice / "movies.csv").read_text().splitlines()) - 1
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT movie_id) FROM movies") == [(n_movies, n_movies)]
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM recommendations") == [
        (SLICE_USERS * SMALL_RUN["k"], SLICE_USERS)
    ]
    # the same recommendations as one uninterrupted `recjobs run` of the same data and settings
    reference = Settings(
        data_dir=data_slice, db=tmp_path / "reference.db", artifacts=tmp_path / "reference", **SMALL_RUN
    )
    pipeline.run(reference, "reference")
    assert [row[1:4] for row in served(db)] == [row[1:4] for row in served(reference.db)]


@pytest.mark.parametrize("failing_task", ["evaluate", pytest.param("precompute", marks=pytest.mark.slow)])
def test_a_failed_step_leaves_the_published_recommendations_served(
    served_slice, migrated, data_slice, tmp_path, failing_task
):
    db, airflow_home = tmp_path / "recs.db", new_airflow_home(migrated, tmp_path / "airflow")
    copy_db(served_slice, db)
    before = served(db)
    done, _ = dags_test(airflow_home, tmp_path, SMALL_RUN, data_slice, fault=failing_task)
    assert done.returncode != 0
    airflow_run_id, state = last_dag_run(airflow_home)
    assert state == "failed"
    task_tries = tries(airflow_home, airflow_run_id)
    assert task_tries[failing_task] == (3, "failed")  # the first try and two retries
    assert task_tries["evaluate_cold_start"][1] == "upstream_failed"
    assert served(db) == before
    run = newest_run(db)
    assert run["status"] == "failed" and failing_task in run["status_reason"]
    assert run["run_id"] != before[0][0]


def test_bad_input_fails_at_once_without_retries(served_slice, migrated, tmp_path):
    db, airflow_home = tmp_path / "recs.db", new_airflow_home(migrated, tmp_path / "airflow")
    copy_db(served_slice, db)
    bad_data = tmp_path / "bad-data"
    shutil.copytree(require_shared_data(), bad_data)
    (bad_data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,9.0,1\n")
    before = served(db)
    done, _ = dags_test(airflow_home, tmp_path, SMALL_RUN, bad_data)
    assert done.returncode != 0
    airflow_run_id, state = last_dag_run(airflow_home)
    assert state == "failed"
    assert tries(airflow_home, airflow_run_id)["load"] == (1, "failed")  # a DataError is not retried
    assert "ratings.csv line 2: rating 9.0" in done.stdout + done.stderr
    assert served(db) == before
