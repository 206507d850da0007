"""Airflow as a cluster, for real (`make test-cluster`): a PostgreSQL metadata database, Redis as
the Celery broker, the api-server, scheduler and dag-processor, and two Celery workers, all on
this machine's loopback. A nightly run with its score shards mapped over the workers publishes
the same recommendations as one `recjobs run`, and the task instances show that both workers
scored shards. Every process the test starts is stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from recjobs import pipeline
from recjobs.settings import Settings
from support import (
    REPO,
    SMALL_RUN,
    Processes,
    airflow_env,
    free_port,
    migrate,
    query,
    require_shared_data,
    served,
    wait_for,
)

pytestmark = pytest.mark.cluster  # deselected by `make test`; `make test-cluster` installs the cluster extra first

DAG_ID = "movie_recs_nightly"
SHARDS = 8
WORKERS = ("worker-1", "worker-2")
RUN_TIMEOUT = 600


def server_program(name: str) -> str:
    """A PostgreSQL or Redis server program from the distribution's packages."""
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if not found:
        pytest.fail(f"{name} not found: install Debian's postgresql and redis-server packages (.ci/run does)")
    return str(found)


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the distribution's postgres user."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *command]


@pytest.fixture
def cluster(tmp_path):
    """Postgres, Redis and Airflow (api-server, scheduler, dag-processor, two Celery workers)."""
    pg_port, redis_port, api_port = free_port(), free_port(), free_port()
    # Postgres's folders must be the postgres user's, outside pytest's private temp folder
    pg_root = Path(tempfile.mkdtemp(prefix="recjobs-postgres-"))
    (tmp_path / "logs").mkdir()
    processes = Processes({"AIRFLOW_HOME": str(tmp_path)}, tmp_path / "logs")
    try:
        if os.geteuid() == 0:
            shutil.chown(pg_root, "postgres", "postgres")
        initdb = as_postgres_user(
            [server_program("initdb"), "-D", str(pg_root / "data"), "-U", "airflow", "--auth=trust", "-E", "UTF8"]
        )
        subprocess.run(initdb, check=True, capture_output=True, timeout=120, cwd=pg_root)
        processes.run(
            "postgres",
            as_postgres_user(
                [server_program("postgres"), "-D", str(pg_root / "data"), "-p", str(pg_port), "-k", str(pg_root)]
                + ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
            ),
            env=dict(os.environ),
            cwd=pg_root,
        )
        processes.run(
            "redis",
            [server_program("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            env=dict(os.environ),
            cwd=tmp_path,
        )
        psql = [server_program("psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "airflow", "-d", "postgres"]
        wait_for(
            "postgres",
            lambda: subprocess.run([*psql, "-c", "SELECT 1"], capture_output=True, timeout=10).returncode == 0,
            60,
            processes,
        )
        subprocess.run([*psql, "-c", "CREATE DATABASE airflow"], check=True, capture_output=True, timeout=30)

        database = f"postgresql+psycopg2://airflow@127.0.0.1:{pg_port}/airflow"
        env = airflow_env(
            tmp_path / "airflow",
            tmp_path,
            require_shared_data(),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database,
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CELERY__BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
            AIRFLOW__CELERY__RESULT_BACKEND=f"db+postgresql://airflow@127.0.0.1:{pg_port}/airflow",
            AIRFLOW__CELERY__WORKER_CONCURRENCY="2",  # as docker-compose.yaml: a shard beside evaluate
            AIRFLOW__API__PORT=str(api_port),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",  # only the triggered run
            AIRFLOW__CORE__HOSTNAME_CALLABLE="worker_hostname.worker_hostname",
            PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]),
            RECJOBS_TEST_WORKER="scheduler",
        )
        migrate(env)
        processes.env = env
        processes.start("api-server", "--port", str(api_port))
        processes.start("scheduler")
        processes.start("dag-processor")
        for name in WORKERS:
            processes.start(
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                "2",
                "--skip-serve-logs",  # two log servers on one machine would want the same port
                log_name=name,
                env={**env, "RECJOBS_TEST_WORKER": name},
            )
        yield f"http://127.0.0.1:{api_port}/api/v2", tmp_path, processes
    finally:
        processes.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


def test_celery_workers_share_the_score_shards_and_publish_what_one_process_does(cluster, tmp_path):
    api, root, processes = cluster
    http = requests.Session()  # simple auth manager, all admins (airflow.env)
    wait_for("api-server health", lambda: http.get(f"{api}/monitor/health", timeout=5).ok, 180, processes)
    wait_for("DAG parsed", lambda: http.get(f"{api}/dags/{DAG_ID}", timeout=5).ok, 180, processes)
    assert http.patch(f"{api}/dags/{DAG_ID}", json={"is_paused": False}, timeout=10).ok
    conf = {**SMALL_RUN, "score_shards": SHARDS}
    response = http.post(f"{api}/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, timeout=30)
    assert response.ok, response.text
    dag_run_id = response.json()["dag_run_id"]
    started = time.perf_counter()

    def finished():
        state = http.get(f"{api}/dags/{DAG_ID}/dagRuns/{dag_run_id}", timeout=10).json()["state"]
        return state if state in ("success", "failed") else None

    state = wait_for(f"run {dag_run_id}", finished, RUN_TIMEOUT, processes, every=2.0)
    print(f"CeleryExecutor, 2 workers: {dag_run_id} {state} {time.perf_counter() - started:.1f} s after the trigger")
    instances = http.get(
        f"{api}/dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances", params={"limit": 100}, timeout=10
    ).json()["task_instances"]
    assert state == "success", f"{[(t['task_id'], t['state']) for t in instances]}\n{processes.tails()}"
    shard_hosts = [t["hostname"] for t in instances if t["task_id"] == "score_shard"]
    print(f"score_shard ran on: {sorted(shard_hosts)}")
    print("tasks ran on:", {t["task_id"]: t["hostname"] for t in instances if t["task_id"] != "score_shard"})
    assert len(shard_hosts) == SHARDS
    assert {host.rsplit("/", 1)[-1] for host in shard_hosts} == set(WORKERS)  # both workers scored shards
    assert all(t["state"] == "success" for t in instances)

    # the same rows as one uninterrupted `recjobs run` of the same data and settings
    db = root / "recs.db"
    assert query(db, "SELECT status FROM model_runs") == [("published",)]
    reference = Settings(
        data_dir=require_shared_data(), db=tmp_path / "reference.db", artifacts=tmp_path / "reference", **SMALL_RUN
    )
    assert pipeline.run(reference, "reference").precompute.status == "published"
    assert [row[1:4] for row in served(db)] == [row[1:4] for row in served(reference.db)]
    assert len(served(db)) == 610 * SMALL_RUN["k"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-m", "cluster", "-s"]))
