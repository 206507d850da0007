"""The Airflow DAGs: they parse fast and cleanly, and `airflow dags test` (Dag.test) runs the
nightly DAG on ml-latest-small: it publishes, a retried task leaves no duplicate row, and a
failed evaluate or precompute leaves the published recommendations as they were.

Airflow runs in subprocesses with a temporary AIRFLOW_HOME and the project's airflow.env,
so its configuration never leaks into (or from) the pytest process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from support import (
    DAGS,
    NIGHTLY_EDGES,
    NIGHTLY_TASKS,
    REPO,
    SMALL_RUN,
    airflow,
    airflow_env,
    copy_db,
    dags_test,
    last_dag_run,
    migrated_airflow_home,
    movielens_slice,
    new_airflow_home,
    newest_run,
    query,
    read_env_file,
    require_shared_data,
    tries,
)

# ---- parsing ----------------------------------------------------------------------------

PARSE_SCRIPT = r"""
import json, sys, time
from pathlib import Path
dags = Path(sys.argv[1])
from airflow.dag_processing.dagbag import BundleDagBag
started = time.perf_counter()  # Airflow itself is imported: this times parsing dags/
bag = BundleDagBag(dags, bundle_path=dags)
seconds = time.perf_counter() - started
from movie_recs_common import recjobs_run_id
out = {"seconds": seconds, "import_errors": {str(k): v for k, v in bag.import_errors.items()},
       "heavy_modules": [m for m in ("numpy", "pandas", "scipy", "implicit") if m in sys.modules],
       "run_ids": {r: recjobs_run_id(r) for r in sys.argv[2:]}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "order": [t.task_id for t in dag.topological_sort()],
        "mapped": sorted(t.task_id for t in dag.tasks if "Mapped" in type(t).__name__),
        "edges": sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
        "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
        "schedule": str(dag.schedule) if dag.schedule is not None else None,
        "tags": sorted(dag.tags), "doc_md": dag.doc_md,
        "on_failure_callback": [getattr(c, "__name__", str(c)) for c in
                                (dag.on_failure_callback if isinstance(dag.on_failure_callback, list)
                                 else [dag.on_failure_callback] if dag.on_failure_callback else [])],
        "params": {k: dag.params.get_param(k).resolve(suppress_exception=True) for k in dag.params},
        "tasks": {t.task_id: {"retries": t.retries, "retry_delay": t.retry_delay.total_seconds(),
                              "execution_timeout": t.execution_timeout.total_seconds()
                              if t.execution_timeout else None,
                              "outlets": [getattr(o, "uri", None) for o in t.outlets]}
                  for t in dag.tasks},
    }
print("PARSED " + json.dumps(out, default=str))
"""

AIRFLOW_RUN_IDS = [
    "manual__2026-11-27T22:56:36.700692+00:00",
    "scheduled__2026-11-28T02:30:00+00:00",
    "my_run-1",
    "-odd/id?",
    "x" * 250,
]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    root = tmp_path_factory.mktemp("parse")
    env = airflow_env(root / "airflow", root, root / "data")
    done = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(DAGS), *AIRFLOW_RUN_IDS],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    line = next((out for out in done.stdout.splitlines() if out.startswith("PARSED ")), None)
    assert line, done.stderr[-3000:]
    return {**json.loads(line[len("PARSED ") :]), "data_dir_env": env["RECJOBS_DATA_DIR"], "db_env": env["RECJOBS_DB"]}


def test_dags_parse_without_errors_fast_and_light(parsed):
    assert parsed["import_errors"] == {}
    assert set(parsed["dags"]) == {"movie_recs_nightly", "movie_recs_cold_start", "movie_recs_refresh"}
    assert parsed["seconds"] < 2.0
    assert parsed["heavy_modules"] == []  # numpy, pandas, implicit load inside the tasks only


def test_nightly_dag_runs_the_jobs_in_order(parsed):
    dag = parsed["dags"]["movie_recs_nightly"]
    assert sorted(dag["order"]) == sorted(NIGHTLY_TASKS)
    assert dag["edges"] == sorted([a, b] for a, after in NIGHTLY_EDGES.items() for b in after)
    order = dag["order"].index
    assert all(order(a) < order(b) for a, b in dag["edges"])  # a topological order
    assert dag["mapped"] == ["score_shard"]
    assert dag["tasks"]["precompute"]["outlets"] == [f"file://{parsed['db_env']}"]
    assert "30 2 * * *" in dag["schedule"]
    assert "nightly" in dag["tags"] and "load" in dag["doc_md"]


def test_cold_start_dag_is_on_demand(parsed):
    dag = parsed["dags"]["movie_recs_cold_start"]
    assert dag["order"] == ["cold_start"]
    assert dag["schedule"] is None
    assert dag["params"]["k"] == 10 and dag["params"]["liked"] is None  # liked must be given
    assert "liked" in dag["doc_md"]


def test_refresh_dag_runs_every_minute_one_run_at_a_time(parsed):
    dag = parsed["dags"]["movie_recs_refresh"]
    assert dag["order"] == ["refresh"]
    assert "* * * * *" in dag["schedule"]  # the setting refresh_schedule's default
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False
    assert dag["params"] == {"data_dir": parsed["data_dir_env"]}
    task = dag["tasks"]["refresh"]
    assert task["retries"] == 0 and 0 < task["execution_timeout"] <= 600  # the next minute's run is the retry
    assert "incoming/" in dag["doc_md"]


@pytest.mark.parametrize("dag_id", ["movie_recs_nightly", "movie_recs_cold_start"])
def test_every_task_retries_with_a_delay_and_has_a_timeout(parsed, dag_id):
    dag = parsed["dags"][dag_id]
    assert dag["max_active_runs"] == 1
    assert dag["catchup"] is False
    for task_id, task in dag["tasks"].items():
        assert task["retries"] >= 2, task_id
        assert task["retry_delay"] >= 1, task_id
        assert task["execution_timeout"] and task["execution_timeout"] > 0, task_id


def test_the_project_waits_two_minutes_between_tries():
    # the tests shorten the delay to 1 s; what operators get is the project's airflow.env
    assert read_env_file(REPO / "airflow.env")["AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY"] == "120"


CALLBACK_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from movie_recs_common import mark_run_failed
mark_run_failed({"run_id": sys.argv[2], "params": {}, "reason": "task_failure"})
"""


def test_a_failed_dag_run_leaves_no_recjobs_run_running(parsed, tmp_path):
    """The nightly DAG's failure callback (a killed task, a run out of tries or time): the run
    still 'running' is failed at once; a run a step already ended keeps its status and reason."""
    from recjobs.jobs.load import load
    from recjobs.settings import Settings
    from recjobs.storage import db, runs

    assert parsed["dags"]["movie_recs_nightly"]["on_failure_callback"] == ["mark_run_failed"]
    env = airflow_env(tmp_path / "airflow", tmp_path, movielens_slice(tmp_path / "data"))
    settings = Settings(data_dir=tmp_path / "data", db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts")
    for run_id in ("manual__killed", "manual__ended"):
        load(settings, run_id)
    with db.transaction(settings.db) as conn:
        runs.finish(conn, "manual__ended", "failed", "evaluate try 3: RuntimeError: boom")
    for run_id in ("manual__killed", "manual__ended"):
        done = subprocess.run(
            [sys.executable, "-c", CALLBACK_SCRIPT, str(DAGS), run_id], env=env, text=True, capture_output=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
    assert query(settings.db, "SELECT run_id, status, status_reason FROM model_runs ORDER BY run_id") == [
        ("manual__ended", "failed", "evaluate try 3: RuntimeError: boom"),
        ("manual__killed", "failed", "the Airflow run manual__killed failed: task_failure"),
    ]


def test_nightly_params_follow_the_settings(parsed):
    from recjobs.settings import setting_help

    params = parsed["dags"]["movie_recs_nightly"]["params"]
    help_texts = setting_help()
    assert set(params) == {
        "factors",
        "regularization",
        "iterations",
        "k",
        "data_dir",
        "engine",
        "score_shards",
        "full_evaluation_every",
        "full_evaluation",
    }
    for name in ("factors", "regularization", "iterations", "k", "engine", "score_shards", "full_evaluation_every"):
        assert params[name] == help_texts[name][0]
    assert params["data_dir"] == parsed["data_dir_env"]  # RECJOBS_DATA_DIR, as the jobs read it
    assert params["full_evaluation"] is False


def test_recjobs_run_ids_are_valid_and_stable(parsed):
    from recjobs.storage.runs import check_run_id

    ids = parsed["run_ids"]
    for run_id in ids.values():
        assert check_run_id(run_id) == run_id
    assert ids["my_run-1"] == "my_run-1"
    assert ids["manual__2026-11-27T22:56:36.700692+00:00"].startswith("manual__2026-11-27T22-56-36.700692")
    assert len(set(ids.values())) == len(ids)


# ---- Dag.test runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, worker_id):
    return migrated_airflow_home(tmp_path_factory, worker_id)


@pytest.fixture(scope="module")
def published(migrated, tmp_path_factory):
    """One clean `airflow dags test` of the nightly DAG on the first SLICE_USERS users of
    ml-latest-small: the root its database is under (its AIRFLOW_HOME is root/airflow)."""
    root = tmp_path_factory.mktemp("published")
    airflow_home = new_airflow_home(migrated, root / "airflow")
    done, seconds = dags_test(airflow_home, root, SMALL_RUN, movielens_slice(root / "ml-slice"))
    print(f"airflow dags test movie_recs_nightly (ml-latest-small slice, {SMALL_RUN}): {seconds:.1f} s wall")
    assert done.returncode == 0, done.stdout[-5000:]
    return root


def test_dag_test_publishes_a_run(published):
    db, airflow_home = published / "recs.db", published / "airflow"
    airflow_run_id, state = last_dag_run(airflow_home)
    assert state == "success"
    run = newest_run(db)
    assert run["status"] == "published"
    assert run["run_id"].startswith(re.sub(r"[^A-Za-z0-9_.-]+", "-", airflow_run_id))
    assert query(db, "SELECT run_id FROM published_run") == [(run["run_id"],)]
    n_users = query(db, "SELECT COUNT(DISTINCT user_id) FROM ratings")[0][0]
    assert query(db, "SELECT COUNT(*) FROM current_recommendations")[0][0] == n_users * SMALL_RUN["k"]
    assert json.loads(run["params_json"])["factors"] == SMALL_RUN["factors"]  # the run's params reached the job
    assert (published / "artifacts" / run["run_id"] / "model_full.npz").is_file()
    assert {state for _, state in tries(airflow_home, airflow_run_id).values()} == {"success"}
    # the train task scored the catalogue's unrated and thin movies from their content
    with np.load(published / "artifacts" / run["run_id"] / "model_full.npz") as model_file:
        content_ids, movie_ids = model_file["content_movie_ids"], model_file["movie_ids"]
    unrated = query(db, "SELECT COUNT(*) FROM movies WHERE movie_id NOT IN (SELECT movie_id FROM ratings)")[0][0]
    assert unrated > 0 and len(content_ids) >= unrated and np.isin(content_ids, movie_ids).all()
    assert json.loads(run["params_json"])["min_ratings_to_score"] == 5


def test_cold_start_dag_answers_and_stores_the_answer(published, migrated, tmp_path):
    db, airflow_home = tmp_path / "recs.db", new_airflow_home(migrated, tmp_path / "airflow")
    copy_db(published / "recs.db", db)
    env = airflow_env(airflow_home, tmp_path, require_shared_data())
    done = airflow(env, "dags", "test", "movie_recs_cold_start", "-c", json.dumps({"liked": [296, 318, 296], "k": 5}))
    assert done.returncode == 0, done.stdout[-5000:]
    assert last_dag_run(airflow_home, "movie_recs_cold_start")[1] == "success"
    ((request_id, run_id, liked),) = query(db, "SELECT request_id, run_id, liked_json FROM cold_start_requests")
    assert json.loads(liked) == [296, 318] and run_id == query(db, "SELECT run_id FROM published_run")[0][0]
    movies = [
        m
        for (m,) in query(
            db, "SELECT movie_id FROM cold_start_recommendations WHERE request_id = ? ORDER BY rank", request_id
        )
    ]
    assert len(movies) == 5 and not {296, 318} & set(movies)

    # an id no movie can have: the job's ConfigError fails the task at once, without retries
    bad = airflow(env, "dags", "test", "movie_recs_cold_start", "-c", json.dumps({"liked": [2**40], "k": 5}))
    assert bad.returncode != 0
    airflow_run_id, state = last_dag_run(airflow_home, "movie_recs_cold_start")
    assert state == "failed" and tries(airflow_home, airflow_run_id)["cold_start"] == (1, "failed")
    assert "is not a valid movie id" in bad.stdout
    assert query(db, "SELECT COUNT(*) FROM cold_start_requests") == [(1,)]


def test_refresh_dag_remakes_a_users_list_from_an_incoming_file(published, migrated, tmp_path):
    db, airflow_home = tmp_path / "recs.db", new_airflow_home(migrated, tmp_path / "airflow")
    copy_db(published / "recs.db", db)
    data = tmp_path / "data"
    (data / "incoming").mkdir(parents=True)
    before = query(db, "SELECT movie_id FROM current_recommendations WHERE user_id = 1 ORDER BY rank")
    rated = [m for (m,) in before[:3]]
    lines = "".join(f"1,{m},5.0,1764979200\n" for m in rated)
    (data / "incoming" / "ratings-1.csv").write_text("userId,movieId,rating,timestamp\n" + lines)
    env = airflow_env(airflow_home, tmp_path, data)
    done = airflow(env, "dags", "test", "movie_recs_refresh")
    assert done.returncode == 0, done.stdout[-5000:]
    assert last_dag_run(airflow_home, "movie_recs_refresh")[1] == "success"
    after = query(db, "SELECT movie_id, refreshed_at FROM current_recommendations WHERE user_id = 1 ORDER BY rank")
    assert len(after) == SMALL_RUN["k"] and not set(rated) & {m for m, _ in after}
    assert {r for _, r in after} == {query(db, "SELECT refreshed_at FROM refreshes")[0][0]}
    assert query(db, "SELECT n_ratings, n_users FROM refreshes") == [(3, 1)]

    # a bad file fails the task at once, in one line, and writes nothing
    (data / "incoming" / "ratings-2.csv").write_text("userId,movieId,rating,timestamp\n1,296,9,1764979200\n")
    bad = airflow(env, "dags", "test", "movie_recs_refresh")
    assert bad.returncode != 0 and "incoming/ratings-2.csv line 2: rating 9 is not one of 0.5" in bad.stdout
    assert query(db, "SELECT count(*) FROM refreshes") == [(1,)]
