"""Score shards: users cut into ranges scored apart (the DAG maps score_shard over them) and
published by precompute in one transaction. However the users are cut, the published rows are
the same to the last bit; a retried shard replaces its file; a stale or damaged file is never
published. Also the candidate re-ranking the Spark engine's shards use."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from recjobs import pipeline
from recjobs.errors import ConfigError
from recjobs.jobs.precompute import precompute
from recjobs.jobs.score_shard import score_shard
from recjobs.method import model, shards
from recjobs.settings import Settings
from recjobs.storage import artifacts
from support import SMALL_RUN, query, require_shared_data, served


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """ml-latest-small published by `recjobs run` with one shard (all scored in precompute)."""
    root = tmp_path_factory.mktemp("shards")
    settings = Settings(
        data_dir=require_shared_data(),
        db=root / "recs.db",
        artifacts=root / "artifacts",
        score_shards=1,
        **SMALL_RUN,
    )
    result = pipeline.run(settings, "night")
    assert result.precompute.status == "published" and result.precompute.shards_from_files == 0
    return settings


def test_bounds_cover_every_user_at_multiples_of_the_scoring_batch():
    step = model.score_batch(9_742)
    for n_users, n_shards in ((610, 1), (610, 3), (610, 7), (5, 4), (0, 2), (100_000, 13)):
        cuts = shards.bounds(n_users, 9_742, n_shards)
        assert len(cuts) == n_shards + 1 and cuts[0] == 0 and cuts[-1] == n_users
        assert np.all(np.diff(cuts) >= 0)
        assert all(c % step == 0 or c == n_users for c in cuts)


@pytest.mark.parametrize("n_shards", [3, 7])
def test_any_shard_count_publishes_the_same_rows_to_the_last_bit(published, n_shards):
    before = served(published.db)
    settings = published.replace(score_shards=n_shards)
    results = [score_shard(settings, "night", shard) for shard in range(n_shards)]
    assert sum(r.n_users for r in results) == 610
    assert [r.first_user_row for r in results] == shards.bounds(610, 9_742, n_shards)[:-1].tolist()
    done = precompute(settings, "night")
    assert done.status == "published" and done.shards_from_files == n_shards
    assert served(published.db) == before  # same users, ranks, movies and scores (floats compared exactly)
    assert len(before) == 610 * SMALL_RUN["k"]


def test_a_retried_shard_replaces_its_file_and_no_row_is_doubled(published):
    settings = published.replace(score_shards=2)
    first = score_shard(settings, "night", 1)
    again = score_shard(settings, "night", 1)  # a retry after the file was written
    assert first.path == again.path
    assert sorted(p.name for p in (published.artifacts / "night" / "shards").glob("*-of-0002.npz")) == [
        "recommendations-0002-of-0002.npz"
    ]
    done = precompute(settings, "night")
    assert done.shards_from_files == 1  # shard 1 of 2 had no file: scored in precompute
    assert query(published.db, "SELECT COUNT(*), COUNT(DISTINCT user_id || '-' || rank) FROM recommendations") == [
        (610 * SMALL_RUN["k"], 610 * SMALL_RUN["k"])
    ]


def test_a_stale_or_damaged_shard_file_is_scored_again_not_published(published, caplog):
    settings = published.replace(score_shards=2)
    before = served(published.db)
    directory = published.artifacts / "night"
    for shard in range(2):
        score_shard(settings, "night", shard)
    # a file from another model: poison it, then re-save the model (as a cleared train does)
    poisoned = shards.shard_file(directory, 0, 2)
    with np.load(poisoned) as f:
        fields = dict(f)
    fields["top_items"] = np.zeros_like(fields["top_items"])
    np.savez(poisoned, **fields)
    fitted, factors = model.Fitted.read(directory, artifacts.FULL, settings)
    fitted.save(directory, artifacts.FULL, factors.user_ids, factors.movie_ids)
    shards.shard_file(directory, 1, 2).write_bytes(b"not an npz file")
    with caplog.at_level("WARNING"):
        done = precompute(settings, "night")
    assert done.shards_from_files == 0
    assert "made from another model" in caplog.text and "unreadable" in caplog.text
    assert served(published.db) == before


def test_a_shard_out_of_range_is_a_one_line_error(published):
    with pytest.raises(ConfigError, match=r"shard 2 is out of range; expected an integer from 0 to 1"):
        score_shard(published.replace(score_shards=2), "night", 2)
    done = subprocess.run(
        [sys.executable, "-m", "recjobs", "score-shard", "--shard", "-1", "--score-shards", "3"]
        + ["--db", str(published.db), "--artifacts", str(published.artifacts), "--run-id", "night"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "Error: shard -1 is out of range; expected an integer from 0 to 2"


def all_items(n_users: int, n_items: int) -> dict[int, np.ndarray]:
    return {row: np.arange(n_items) for row in range(n_users)}


@pytest.mark.parametrize("per_user_now", [False, True])
def test_reranking_candidates_scores_each_movie_as_the_whole_blend_does(published, per_user_now):
    directory = published.artifacts / "night"
    fitted, factors = model.Fitted.read(directory, artifacts.FULL, published)
    ratings = artifacts.read_ratings(directory)
    n_users, n_items = len(factors.user_ids), len(factors.movie_ids)
    now = None
    if per_user_now:  # as evaluations see it: each user's own "now", some days before the newest rating
        now = np.random.default_rng(0).integers(ratings["rated_at"].min(), ratings["rated_at"].max(), n_users)
    data = model.interactions(
        ratings, np.ones(len(ratings["rating"]), bool), factors.user_ids, factors.movie_ids, published, now
    )
    rows = np.arange(0, n_users, 3)
    full = fitted.scores(rows, data, published)
    full_ids, full_scores = fitted.recommend(rows, data, 20, published)

    # every movie a candidate: the whole blend's top lists, its scores to rounding
    ids, scores = fitted.recommend_candidates(rows, all_items(n_users, n_items), data, 20, published)
    np.testing.assert_allclose(scores, full_scores, rtol=1e-6, atol=1e-6)  # float32 ALS dot products
    assert (ids == full_ids).mean() > 0.99  # only near-ties may swap
    # a few candidates: each listed movie scored as the whole blend scores it, none already rated
    few = {int(row): np.random.default_rng(int(row)).choice(n_items, 30, replace=False) for row in rows}
    ids, scores = fitted.recommend_candidates(rows, few, data, 20, published, per_part=5)
    kept = ids >= 0
    assert kept.all()  # 20 each, whatever few candidates Spark gave
    listed = np.nonzero(kept)
    np.testing.assert_allclose(
        scores[listed], full[listed[0], ids[listed]], rtol=1e-6, atol=1e-6
    )  # float32 ALS dot products
    seen = data.seen[rows].toarray() > 0
    assert not seen[listed[0], ids[listed]].any()
    assert np.all(np.diff(np.where(kept, scores, -np.inf), axis=1) <= 0)  # best first
    # no candidate at all: the parts' and ALS's own best unrated movies still fill every list
    ids, _ = fitted.recommend_candidates(rows, {}, data, 20, published, per_part=3)
    assert (ids >= 0).all()
    assert not seen[np.arange(len(rows))[:, None], ids].any()
