"""engine=spark, with Spark in local mode on loopback (`make test-spark`; needs the spark extra
and a Java runtime): the item-item parts Spark counts are the implicit engine's, the whole
nightly DAG publishes through `airflow dags test`, the two engines' quality side by side, and a
Spark Connect URL (sc://) runs a night on a Connect server."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from recjobs import pipeline
from recjobs.method import model, spark_engine
from recjobs.settings import Settings
from recjobs.storage import artifacts
from support import (
    SMALL_RUN,
    Processes,
    checkerboard_settings,
    dags_test,
    free_port,
    last_dag_run,
    mapped_tries,
    migrated_airflow_home,
    new_airflow_home,
    newest_run,
    query,
    require_shared_data,
    wait_for,
)

pytestmark = pytest.mark.spark  # deselected by `make test`; `make test-spark` installs the spark extra first

SPARK = {"engine": "spark", "spark_master": "local[2]", "spark_partitions": 4, "spark_driver_memory": "1g"}


@pytest.fixture(scope="module")
def spark_settings(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("spark")
    return Settings(
        data_dir=require_shared_data(),
        db=root / "recs.db",
        artifacts=root / "artifacts",
        spark_checkpoint_dir=root / "checkpoints",
        **SPARK,
    )


@pytest.fixture(scope="module")
def ml_small_interactions(spark_settings):
    from recjobs.jobs.load import load

    load(spark_settings, "input")
    ratings = artifacts.read_ratings(artifacts.run_dir(spark_settings.artifacts, "input"))
    user_ids, movie_ids = np.unique(ratings["user_id"]), np.unique(ratings["movie_id"])
    everything = np.ones(len(ratings["rating"]), bool)
    return model.interactions(ratings, everything, user_ids, movie_ids, spark_settings)


def largest_per_row(m, row: int) -> np.ndarray:
    return np.sort(m.data[m.indptr[row] : m.indptr[row + 1]])[::-1]


def test_spark_counts_the_item_item_parts_as_the_implicit_engine(spark_settings, ml_small_interactions, tmp_path):
    data, n_items = ml_small_interactions, ml_small_interactions.seen.shape[1]
    positives = data.positives.tocoo()
    with spark_engine.session(spark_settings) as spark:
        cosine = spark_engine.item_similarity(
            spark,
            spark_engine.write_parquet(tmp_path / "p.parquet", user=positives.row, item=positives.col),
            n_items,
            spark_settings,
        )
        sequence = spark_engine.sequence_similarity(
            spark,
            spark_engine.write_parquet(
                tmp_path / "s.parquet",
                user=data.sequence_users,
                item=data.sequence_items,
                at=np.arange(len(data.sequence_items)),
            ),
            n_items,
            spark_settings,
        )
    expected_cosine = model.item_similarity(data.positives, spark_settings)
    expected_sequence = model.sequence_similarity(data, n_items, spark_settings)
    assert cosine.shape == expected_cosine.shape == (n_items, n_items)
    assert cosine.nnz == expected_cosine.nnz > 1_000_000
    assert abs(sequence.nnz - expected_sequence.nnz) <= 1e-3 * expected_sequence.nnz  # ties at the cut, rounded
    assert cosine.diagonal().max() == 0 and sequence.diagonal().max() == 0
    # each movie's neighbour scores are the same (which of tied neighbours is kept may differ)
    for row in range(0, n_items, 7):
        np.testing.assert_allclose(largest_per_row(cosine, row), largest_per_row(expected_cosine, row), rtol=1e-5)
        got, want = largest_per_row(sequence, row), largest_per_row(expected_sequence, row)
        n = min(len(got), len(want))
        np.testing.assert_allclose(got[:n], want[:n], rtol=1e-5)


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory):
    """One `recjobs run` per engine on ml-latest-small, the default method settings."""
    results = {}
    for engine in ("implicit", "spark"):
        root = tmp_path_factory.mktemp(engine)
        settings = Settings(
            data_dir=require_shared_data(),
            db=root / "recs.db",
            artifacts=root / "artifacts",
            spark_checkpoint_dir=root / "checkpoints",
            **{**SPARK, "engine": engine},
        )
        results[engine] = (settings, pipeline.run(settings, f"{engine}-night"))
    return results


def test_both_engines_publish_the_same_contract_and_spark_quality_is_within_the_noise(both_engines):
    implicit_settings, implicit_run = both_engines["implicit"]
    spark_settings, spark_run = both_engines["spark"]
    for settings, result in both_engines.values():
        assert result.precompute.status == "published"
        assert query(settings.db, "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM current_recommendations") == [
            (610 * settings.k, 610)
        ]
    spark_dir = artifacts.run_dir(spark_settings.artifacts, spark_run.run_id)
    assert (spark_dir / "candidates_full").is_dir()  # the shards re-ranked Spark's candidates
    assert not (artifacts.run_dir(implicit_settings.artifacts, implicit_run.run_id) / "candidates_full").exists()
    ours, theirs = implicit_run.evaluate, spark_run.evaluate
    print(
        f"Recall@10 implicit {ours.recall_at_10:.4f} {ours.recall_at_10_ci}, spark {theirs.recall_at_10:.4f} "
        f"{theirs.recall_at_10_ci}; NDCG@10 implicit {ours.ndcg_at_10:.4f}, spark {theirs.ndcg_at_10:.4f}; "
        f"popularity {ours.popularity_recall_at_10:.4f}"
    )
    assert theirs.recall_at_10 > theirs.popularity_recall_at_10
    # no worse than the implicit engine beyond the bootstrap noise: above the low end of its 95% interval
    assert theirs.recall_at_10 >= ours.recall_at_10_ci[0]
    assert theirs.ndcg_at_10 >= ours.ndcg_at_10_ci[0]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, worker_id):
    return migrated_airflow_home(tmp_path_factory, worker_id)


def test_the_nightly_dag_publishes_with_engine_spark(migrated, tmp_path):
    airflow_home = new_airflow_home(migrated, tmp_path / "airflow")
    conf = {**SMALL_RUN, "engine": "spark", "score_shards": 3}
    done, seconds = dags_test(
        airflow_home,
        tmp_path,
        conf,
        require_shared_data(),
        RECJOBS_SPARK_MASTER="local[2]",
        RECJOBS_SPARK_PARTITIONS="4",
        RECJOBS_SPARK_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
    )
    print(f"airflow dags test movie_recs_nightly, engine=spark, ml-latest-small: {seconds:.1f} s wall")
    assert done.returncode == 0, done.stdout[-5000:]
    airflow_run_id, state = last_dag_run(airflow_home)
    assert state == "success"
    assert mapped_tries(airflow_home, airflow_run_id, "score_shard") == {i: (1, "success") for i in range(3)}
    run = newest_run(tmp_path / "recs.db")
    assert run["status"] == "published" and json.loads(run["params_json"])["engine"] == "spark"
    assert query(tmp_path / "recs.db", "SELECT COUNT(*) FROM current_recommendations") == [(610 * SMALL_RUN["k"],)]
    assert "3 of 3 shards from score_shard files" in done.stdout
    assert "train " in done.stdout and "(spark)" in done.stdout


def spark_submit() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-submit"


def test_a_spark_connect_url_runs_the_night_on_a_connect_server(tmp_path):
    """spark_master sc://host:port: a Spark Connect server (Spark's own, from pyspark's jars) on a
    free loopback port, stopped by pid."""
    port = free_port()
    (tmp_path / "logs").mkdir()
    processes = Processes({"AIRFLOW_HOME": str(tmp_path)}, tmp_path / "logs")
    try:
        processes.run(
            "spark-connect",
            [str(spark_submit()), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer"]
            + ["--master", "local[2]", "--conf", "spark.ui.enabled=false"]
            + [
                "--conf",
                "spark.connect.grpc.binding.address=127.0.0.1",
                "--conf",
                f"spark.connect.grpc.binding.port={port}",
            ]
            + ["--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1"],
            env={**os.environ, "SPARK_HOME": str(spark_submit().parent.parent)},
            cwd=tmp_path,
        )

        def listening():
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for("Spark Connect server", listening, 120, processes)
        settings = checkerboard_settings(
            tmp_path,
            engine="spark",
            spark_master=f"sc://127.0.0.1:{port}",
            spark_checkpoint_dir=tmp_path / "checkpoints",
            spark_candidates=10,
            n_similar=3,
        )
        result = pipeline.run(settings, "connect")
    finally:
        processes.stop()
    assert result.precompute.status == "published"
    assert result.evaluate.recall_at_10 > result.evaluate.popularity_recall_at_10
    assert query(settings.db, "SELECT COUNT(*) FROM current_recommendations") == [(40 * settings.k,)]
    assert (tmp_path / "artifacts" / "connect" / "candidates_full").is_dir()


def test_engine_spark_follows_the_one_fit_protocol(both_engines):
    """The Spark night fits once too: the published model is the fit with the held-out users'
    factors re-solved, and their candidates are the only ones that change."""
    import pyarrow.dataset as ds

    from recjobs.evaluation.holdout import NightPlan

    settings, result = both_engines["spark"]
    directory = artifacts.run_dir(settings.artifacts, result.run_id)
    plan = NightPlan.from_arrays(artifacts.read_plan(directory))
    assert result.train.n_folded_users == len(plan.folded_user_ids) == 608
    fit = model.Factors.read(directory / artifacts.model_file(artifacts.EVAL))
    published = model.Factors.read(directory / artifacts.model_file(artifacts.FULL))
    np.testing.assert_array_equal(published.item_factors, fit.item_factors)
    folded = model.index(plan.folded_user_ids, fit.user_ids)
    others = np.setdiff1d(np.arange(len(fit.user_ids)), folded)
    np.testing.assert_array_equal(published.user_factors[others], fit.user_factors[others])
    assert not np.allclose(published.user_factors[folded], fit.user_factors[folded])

    def candidates(name):
        table = ds.dataset(spark_engine.candidates_dir(directory, name), format="parquet").to_table()
        return dict(zip(table.column("user").to_pylist(), table.column("items").to_pylist(), strict=True))

    fit_candidates, published_candidates = candidates(artifacts.EVAL), candidates(artifacts.FULL)
    # every user Spark gave candidates to, and every folded user
    assert set(published_candidates) == set(fit_candidates) | set(folded.tolist())
    assert all(published_candidates[u] == fit_candidates[u] for u in set(others.tolist()) & set(fit_candidates))
    scores = published.user_factors[folded[:5]] @ published.item_factors.T
    for row, scored in zip(folded[:5].tolist(), scores, strict=True):  # the re-solved factors' own best movies
        assert published_candidates[row][:10] == np.argsort(-scored, kind="stable")[:10].tolist()
