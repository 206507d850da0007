"""docker-compose.yaml, checked by structure: Docker cannot run where the tests run, so the
file is never started here (tests/test_airflow_cluster.py runs the same shape from Debian's
packages). It must be Airflow's own cluster shape (Postgres, Redis, CeleryExecutor workers),
name files that exist, share the artifacts volume between the workers, Spark and datasette,
and run a Spark cluster of the pyspark version the project pins."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from support import REPO, read_env_file

COMPOSE = REPO / "docker-compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict) -> dict:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker"}


def test_airflow_in_its_own_cluster_shape(compose):
    services = compose["services"]
    assert set(services) == AIRFLOW_SERVICES | {"postgres", "redis", "datasette", "spark-master", "spark-worker"}
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-init": ["db", "migrate"],
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-worker": ["celery", "worker"],
    }
    assert services["airflow-worker"]["deploy"]["replicas"] >= 2
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:airflow@postgres/")
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:airflow@postgres/")
        # the execution API is the api-server's own port, or every task is killed
        assert (
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
            == f"http://airflow-apiserver:{env['AIRFLOW__API__PORT']}/execution/"
        )
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${MOVIE_RECS_JWT_SECRET:?")  # one secret, from .env
        assert set(services[name]["depends_on"]) >= {"postgres", "redis"}, name
        if name != "airflow-init":
            assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "airflow"
    assert services["airflow-apiserver"]["ports"] == ["127.0.0.1:8080:8080"]


def test_workers_spark_and_datasette_share_the_artifacts_volume(compose):
    services = compose["services"]
    assert set(compose["volumes"]) >= {"artifacts", "postgres-db"}
    mounts = {name: {v.split(":")[1]: v.split(":")[0] for v in s.get("volumes", [])} for name, s in services.items()}
    worker = environment(services["airflow-worker"])
    db, artifacts = worker["RECJOBS_DB"], worker["RECJOBS_ARTIFACTS"]
    assert db.startswith(artifacts + "/")
    for name in AIRFLOW_SERVICES | {"datasette", "spark-worker"}:
        assert mounts[name][artifacts] == "artifacts", name  # the same named volume, at the same path
    for name in AIRFLOW_SERVICES | {"datasette"}:
        assert environment(services[name])["RECJOBS_DB"] == db
    assert mounts["airflow-worker"][worker["RECJOBS_DATA_DIR"]] == "./data_small"
    assert worker["RECJOBS_SPARK_CHECKPOINT_DIR"].startswith(artifacts + "/")  # shared storage


def test_spark_master_and_worker_match_the_pyspark_the_project_pins(compose):
    services = compose["services"]
    pinned = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    for name in ("spark-master", "spark-worker"):
        assert services[name]["image"] == f"apache/spark:{pinned['pyspark']}", name  # driver and cluster agree
    assert "org.apache.spark.deploy.master.Master" in services["spark-master"]["command"]
    master_url = environment(services["airflow-worker"])["RECJOBS_SPARK_MASTER"]
    assert services["spark-worker"]["command"][-2:] == ["org.apache.spark.deploy.worker.Worker", master_url]
    from recjobs.settings import Settings

    assert Settings(spark_master=master_url).spark_master == master_url  # a master URL the settings accept
    assert "openjdk-17-jre-headless" in services["airflow-worker"]["build"]["dockerfile_inline"]  # the driver's Java


def test_the_files_it_names_exist(compose):
    airflow = compose["services"]["airflow-scheduler"]
    assert (REPO / airflow["env_file"]).is_file()
    for volume in (v for s in compose["services"].values() for v in s.get("volumes", [])):
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).is_dir(), volume
    dockerfile = airflow["build"]["dockerfile_inline"]
    copied = [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY")
        for part in shlex.split(line)[1:-1]
        if not part.startswith("--")
    ]
    assert {"recjobs", "sql", "dags", "pyproject.toml", "constraints.txt"} <= set(copied)
    for name in copied:
        assert (REPO / name).exists(), name
    # the DAGs folder Airflow reads is the one copied into the image, with the extras the cluster needs
    assert environment(airflow)["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/movie-recs/dags"
    assert "COPY --chown=airflow:root dags /opt/movie-recs/dags" in dockerfile
    assert "[airflow,serve,spark,cluster]" in dockerfile


def test_airflow_runs_with_the_project_settings(compose):
    airflow = compose["services"]["airflow-scheduler"]
    project = read_env_file(REPO / airflow["env_file"])
    assert project["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert re.search(r"FROM apache/airflow:3\.\d+\.\d+-python3\.11", airflow["build"]["dockerfile_inline"])


def test_datasette_serves_the_database_with_recjobs_serve(compose):
    from recjobs.cli import cli

    datasette = compose["services"]["datasette"]
    command = datasette["entrypoint"]
    assert command[:2] == ["recjobs", "serve"] and "serve" in cli.commands
    options = dict(zip(command[2::2], command[3::2], strict=False))
    assert options["--db"] == environment(datasette)["RECJOBS_DB"]
    port = options["--port"]
    assert datasette["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert datasette["image"] == compose["services"]["airflow-scheduler"]["image"]
