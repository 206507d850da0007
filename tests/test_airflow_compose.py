"""docker-compose.yaml, checked by structure: Docker cannot run where the tests run, so the
file is never started here. It must name files that exist, run the project's DAGs with the
project's airflow.env, and share one database between Airflow and datasette."""

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


def test_two_services_share_the_artifacts_volume(compose):
    services = compose["services"]
    assert set(services) == {"airflow", "datasette"}
    assert set(compose["volumes"]) >= {"artifacts", "airflow-home"}
    mounts = {name: {v.split(":")[1]: v.split(":")[0] for v in s["volumes"]} for name, s in services.items()}
    db = environment(services["airflow"])["RECJOBS_DB"]
    artifacts = environment(services["airflow"])["RECJOBS_ARTIFACTS"]
    assert db.startswith(artifacts + "/")
    for name in services:
        assert mounts[name][artifacts] == "artifacts", name  # the same named volume in both
        assert environment(services[name])["RECJOBS_DB"] == db
    assert mounts["airflow"][environment(services["airflow"])["RECJOBS_DATA_DIR"]] == "./data_small"
    assert mounts["airflow"]["/opt/airflow"] == "airflow-home"


def test_the_files_it_names_exist(compose):
    airflow = compose["services"]["airflow"]
    assert (REPO / airflow["env_file"]).is_file()
    for volume in (v for s in compose["services"].values() for v in s["volumes"]):
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
    # the DAGs folder Airflow reads is the one copied into the image
    assert environment(airflow)["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/movie-recs/dags"
    assert "COPY --chown=airflow:root dags /opt/movie-recs/dags" in dockerfile


def test_airflow_runs_with_the_project_settings(compose):
    airflow = compose["services"]["airflow"]
    project = read_env_file(REPO / airflow["env_file"])
    assert project["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    env = environment(airflow)
    port = env.get("AIRFLOW__API__PORT", project["AIRFLOW__API__PORT"])
    # the execution API must be the api-server's own port, or every task is killed
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{port}/execution/"
    assert airflow["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert airflow["command"] == ["standalone"]
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
    assert datasette["image"] == compose["services"]["airflow"]["image"]
