"""Airflow for real: its own api-server, scheduler and dag-processor on a loopback port with a
temporary AIRFLOW_HOME and the project's airflow.env. A run of movie_recs_nightly triggered
through the REST API succeeds and publishes a new run (an event of the database's asset);
cleared and run again, it gives the same tables.
Every process the test starts is stopped by pid.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import requests

from support import SMALL_RUN, Processes, airflow_env, free_port, migrate, movielens_slice, query, wait_for

DAG_ID = "movie_recs_nightly"
RUN_TIMEOUT = 300  # seconds from trigger to a finished run
START_TIMEOUT = 120  # seconds for the api-server to answer and the DAG to be parsed


@pytest.fixture
def airflow_server(tmp_path):
    """The api-server, scheduler and dag-processor on a free loopback port; (api url, env)."""
    port = free_port()
    env = airflow_env(
        tmp_path / "airflow",
        tmp_path,
        movielens_slice(tmp_path / "ml-slice"),
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        # only the triggered run: unpausing would otherwise also start last night's run
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
    )
    migrate(env)
    (tmp_path / "logs").mkdir()
    processes = Processes(env, tmp_path / "logs")
    try:
        processes.start("api-server", "--port", str(port))
        processes.start("scheduler")
        processes.start("dag-processor")
        yield f"http://127.0.0.1:{port}/api/v2", tmp_path, processes
    finally:
        processes.stop()


def test_the_scheduler_runs_a_triggered_nightly_run(airflow_server):
    api, root, processes = airflow_server
    http = requests.Session()  # simple auth manager, all admins (airflow.env): no token needed
    wait_for("api-server health", lambda: http.get(f"{api}/monitor/health", timeout=5).ok, START_TIMEOUT, processes)
    wait_for("DAG parsed", lambda: http.get(f"{api}/dags/{DAG_ID}", timeout=5).ok, START_TIMEOUT, processes)
    assert http.patch(f"{api}/dags/{DAG_ID}", json={"is_paused": False}, timeout=10).ok

    triggered = time.perf_counter()
    response = http.post(f"{api}/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": SMALL_RUN}, timeout=30)
    assert response.ok, response.text
    dag_run_id = response.json()["dag_run_id"]

    def finished():
        state = http.get(f"{api}/dags/{DAG_ID}/dagRuns/{dag_run_id}", timeout=10).json()["state"]
        return state if state in ("success", "failed") else None

    state = wait_for(f"run {dag_run_id}", finished, RUN_TIMEOUT, processes, every=2.0)
    seconds = time.perf_counter() - triggered
    print(f"real scheduler: {dag_run_id} {state} {seconds:.1f} s after the REST trigger")
    tasks = http.get(f"{api}/dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances", timeout=10).json()
    states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
    assert state == "success", f"{states}\n{processes.tails()}"
    assert set(states.values()) == {"success"}

    db = root / "recs.db"
    with sqlite3.connect(db) as conn:
        run_id, status = conn.execute(
            "SELECT r.run_id, r.status FROM published_run AS p JOIN model_runs AS r ON r.run_id = p.run_id"
        ).fetchone()
    assert status == "published" and run_id.startswith("manual__")
    first = tables(db)
    assert first["recommendations"] and first["model_runs"] == [(run_id, "published")]

    def asset_events():
        return http.get(
            f"{api}/assets/events", params={"source_dag_id": DAG_ID, "source_run_id": dag_run_id}, timeout=10
        ).json()["asset_events"]

    assert [(e["source_task_id"], e["uri"]) for e in asset_events()] == [("precompute", f"file://{db}")]

    # Clear the whole run, as an operator re-running it: the same run id, the same tables
    cleared = http.post(f"{api}/dags/{DAG_ID}/dagRuns/{dag_run_id}/clear", json={"dry_run": False}, timeout=30)
    assert cleared.ok, cleared.text
    assert wait_for(f"cleared run {dag_run_id}", finished, RUN_TIMEOUT, processes, every=2.0) == "success"
    assert tables(db) == first
    assert len(asset_events()) == 2


def tables(db: Path) -> dict[str, list]:
    """The rows a run writes, in a fixed order (scores rounded: the same fit, not the same bits)."""
    return {
        "model_runs": query(db, "SELECT run_id, status FROM model_runs ORDER BY run_id"),
        "ratings": query(db, "SELECT COUNT(*), SUM(user_id), SUM(movie_id) FROM ratings"),
        "movies": query(db, "SELECT COUNT(*), SUM(movie_id) FROM movies"),
        "recommendations": query(
            db,
            "SELECT run_id, user_id, rank, movie_id, ROUND(score, 4) FROM recommendations "
            "ORDER BY run_id, user_id, rank",
        ),
        "similar_movies": query(
            db, "SELECT COUNT(*), COUNT(DISTINCT run_id || ':' || movie_id || ':' || rank) FROM similar_movies"
        ),
        "run_metrics": query(
            db, "SELECT run_id, metric, segment, ROUND(value, 6) FROM run_metrics ORDER BY run_id, metric, segment"
        ),
    }
