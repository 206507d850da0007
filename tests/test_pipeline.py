"""End to end on ml-latest-small: what a nightly run publishes, a second run, rollback."""

from __future__ import annotations

import json
import sqlite3

import pytest

from recjobs import pipeline
from recjobs.errors import StateError
from recjobs.storage import publish


def test_published_run_covers_every_user(published_settings):
    con = sqlite3.connect(published_settings.db)
    run = dict(
        zip(
            ("run_id", "status", "n_users", "n_items", "recall", "pop_recall", "ndcg", "steps"),
            con.execute(
                "SELECT run_id, status, n_users, n_items, recall_at_10, popularity_recall_at_10, "
                "ndcg_at_10, step_seconds_json FROM model_runs"
            ).fetchone(),
            strict=True,
        )
    )
    assert run["run_id"] == "first" and run["status"] == "published"
    assert run["n_users"] == 610
    assert run["recall"] > run["pop_recall"]
    assert 0 < run["ndcg"] <= run["recall"]
    assert {"load", "split", "train", "evaluate", "precompute"} <= set(json.loads(run["steps"]))
    assert con.execute("SELECT run_id FROM published_run").fetchone() == ("first",)

    k = published_settings.k
    per_user = con.execute(
        "SELECT count(*), count(DISTINCT movie_id), min(rank), max(rank) FROM current_recommendations GROUP BY user_id"
    ).fetchall()
    assert len(per_user) == 610
    assert set(per_user) == {(k, k, 1, k)}
    already_rated = con.execute(
        "SELECT count(*) FROM current_recommendations c JOIN ratings r "
        "ON r.user_id = c.user_id AND r.movie_id = c.movie_id"
    ).fetchone()[0]
    assert already_rated == 0
    assert con.execute("SELECT count(*) FROM current_recommendations WHERE title IS NULL").fetchone()[0] == 0
    similar = con.execute("SELECT count(DISTINCT movie_id), count(*) FROM current_similar_movies").fetchone()
    assert similar == (run["n_items"], run["n_items"] * published_settings.n_similar)
    assert (
        con.execute("SELECT count(*) FROM current_similar_movies WHERE movie_id = similar_movie_id").fetchone()[0] == 0
    )


def test_scores_descend_with_rank(published_settings):
    con = sqlite3.connect(published_settings.db)
    worse = con.execute(
        "SELECT count(*) FROM current_recommendations a JOIN current_recommendations b "
        "ON a.user_id = b.user_id AND b.rank = a.rank + 1 WHERE b.score > a.score + 1e-6"
    ).fetchone()[0]
    assert worse == 0


def test_second_run_publishes_and_rollback_restores_the_first(small_published):
    settings = small_published.replace(warm_start=False)
    con = sqlite3.connect(settings.db)

    def published_rows():
        return con.execute("SELECT user_id, rank, movie_id FROM current_recommendations").fetchall()

    second = pipeline.run(settings, "second")
    assert second.precompute.status == "published"
    assert con.execute("SELECT run_id FROM published_run").fetchone() == ("second",)
    second_rows = published_rows()
    assert pipeline.run(settings, "third").precompute.status == "published"
    # same data and settings, both from a random start: the same recommendations
    assert published_rows() == second_rows

    assert publish.rollback(settings).to_run_id == "second"
    assert con.execute("SELECT run_id FROM published_run").fetchone() == ("second",)
    assert publish.rollback(settings, "first").to_run_id == "first"


def test_only_the_last_published_runs_keep_their_rows(small_published):
    settings = small_published.replace(keep_published=2)
    for run_id in ("second", "third"):
        pipeline.run(settings, run_id)
    con = sqlite3.connect(settings.db)
    kept = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM recommendations")}
    assert kept == {"second", "third"}
    assert con.execute("SELECT rows_deleted_at IS NOT NULL FROM model_runs WHERE run_id = 'first'").fetchone() == (1,)
    with pytest.raises(StateError, match="'first' cannot be served"):
        publish.rollback(settings, "first")
    assert con.execute("SELECT run_id FROM published_run").fetchone() == ("third",)


def test_rerunning_the_same_run_id_gives_no_duplicates(small_published):
    settings = small_published
    pipeline.run(settings, "again")
    pipeline.run(settings, "again")
    con = sqlite3.connect(settings.db)
    assert con.execute("SELECT count(*) FROM recommendations WHERE run_id = 'again'").fetchone()[0] == 40 * settings.k
    assert con.execute("SELECT count(*) FROM model_runs WHERE run_id = 'again'").fetchone()[0] == 1


def test_a_user_who_rated_almost_everything_gets_only_unrated_movies():
    """User 0 rated 5 of 6 movies: with k=3 only one unrated movie is left to store."""
    import numpy as np

    from recjobs.method import model
    from recjobs.settings import Settings
    from recjobs.storage.publish import ranked_rows

    users = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    items = np.array([0, 1, 2, 3, 4, 1, 5, 2, 3, 5])
    rated = model.matrix(users, items, np.ones(len(users), np.float32), (3, 6))
    als = model.fit(rated * 21, Settings(factors=2, iterations=3))
    ids, scores = model.top_n(als, np.array([0, 1]), rated, 3)
    assert (scores[0] < -1e30).sum() == 2  # implicit pads with filtered items
    rows = list(ranked_rows("r", np.array([10, 11, 12]), np.arange(100, 106), ids, scores))
    assert [(user, rank, movie) for _, user, rank, movie, _ in rows if user == 10] == [(10, 1, 105)]
    assert [rank for _, user, rank, _, _ in rows if user == 11] == [1, 2, 3]


def test_new_data_reaches_readers_only_with_its_published_run(small_published, tmp_path):
    import shutil

    from recjobs.jobs.load import load

    data = tmp_path / "newer"
    shutil.copytree(small_published.data_dir, data)
    (data / "incoming").mkdir(exist_ok=True)
    (data / "incoming" / "late.csv").write_text("userId,movieId,rating,timestamp\n1,2,5.0,1700000000\n")
    settings = small_published.replace(data_dir=data)
    con = sqlite3.connect(settings.db)
    history = "SELECT rating FROM ratings WHERE user_id = 1 AND movie_id = 2"
    assert con.execute(history).fetchall() == []
    load(settings, "newer")
    assert con.execute(history).fetchall() == []  # loaded, not published: readers see the old data
    pipeline.run(settings, "newer")
    assert con.execute(history).fetchall() == [(5.0,)]
    assert con.execute("SELECT run_id FROM published_run").fetchone() == ("newer",)


def damage(db, offset_share: float = 0.6, size: int = 16_384) -> None:
    """Write garbage over pages in the middle of a database file (its WAL checkpointed first)."""
    import os

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    length = os.path.getsize(db)
    with open(db, "r+b") as f:
        f.seek(int(length * offset_share) // 4096 * 4096)
        f.write(os.urandom(size))


def test_a_damaged_database_is_never_published_into_nor_served(small_published):
    from recjobs.serving import serve

    settings = small_published
    damage(settings.db)
    with pytest.raises(StateError, match="the database is damaged"):
        pipeline.run(settings, "second")
    with pytest.raises(StateError, match=r"recs.db: the database is damaged \(quick_check: .+\); restore it"):
        serve.check_database(settings.db)


def test_the_ratings_table_gets_only_what_changed_since_the_run_it_was_written_from(tmp_path, monkeypatch):
    """A night writes the ratings added, changed and removed since the catalog's source run;
    the table then equals the new ratings exactly, as a full rewrite would leave it."""
    import numpy as np
    import pandas as pd

    from recjobs.settings import Settings
    from recjobs.storage import artifacts, db, publish, runs
    from recjobs.storage.artifacts import Catalog

    monkeypatch.setattr(publish, "RATING_ROWS_PER_CHUNK", 1000)  # several chunks, a short last one

    rng = np.random.default_rng(5)
    pairs = np.unique(np.c_[rng.integers(1, 300, 6000), rng.integers(1, 500, 6000)], axis=0)
    first = pd.DataFrame(
        {
            "user_id": pairs[:, 0],
            "movie_id": pairs[:, 1],
            "rating": rng.choice([0.5, 3.0, 4.5, 5.0], len(pairs)),
            "rated_at": rng.integers(1_000_000, 2_000_000, len(pairs)),
        }
    ).sample(frac=1, random_state=1)  # not in key order
    second = first.iloc[40:].copy()  # 40 removed
    second.iloc[:25, second.columns.get_loc("rating")] = 1.0  # 25 ratings changed (some may equal: counted below)
    second.iloc[25:35, second.columns.get_loc("rated_at")] += 7  # 10 times changed
    added = pd.DataFrame({"user_id": [1000, 1000, 1001], "movie_id": [1, 2, 1], "rating": 4.0, "rated_at": 3_000_000})
    second = pd.concat([second, added])
    movies = pd.DataFrame({"movie_id": [1], "title": ["x"], "genres": ["Drama"], "year": [None], "imdb_id": [None]})
    movies["tmdb_id"] = None
    tags = pd.DataFrame({"user_id": [], "movie_id": [], "tag": [], "tagged_at": []})
    settings, path = Settings(), tmp_path / "recs.db"

    def night(run_id: str, ratings: pd.DataFrame) -> publish.CatalogWrite:
        directory = tmp_path / run_id
        directory.mkdir()
        artifacts.save_ratings(directory, ratings)
        with db.transaction(path) as conn:
            runs.start(conn, run_id, settings, directory, "sha")
            stored = pd.DataFrame(artifacts.read_ratings(directory)).astype({"rating": float})  # as precompute reads it
            return publish.store_catalog(conn, Catalog(movies, stored, tags), run_id)

    def table() -> list:
        with db.reading(path) as conn:
            return [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM ratings ORDER BY user_id, movie_id")]

    def expected(ratings: pd.DataFrame) -> list:
        ordered = ratings.sort_values(["user_id", "movie_id"])
        return [
            (int(u), int(m), float(np.float32(r)), int(t))
            for u, m, r, t in ordered[["user_id", "movie_id", "rating", "rated_at"]].itertuples(index=False)
        ]

    assert night("a", first) == publish.CatalogWrite(True, len(first), 0, 0)  # nothing written before: all
    assert table() == expected(first)
    n_changed = int((first.iloc[40:65]["rating"] != 1.0).sum()) + 10
    assert night("b", second) == publish.CatalogWrite(False, 3, n_changed, 40)
    assert table() == expected(second)
    assert night("c", second) == publish.CatalogWrite(False, 0, 0, 0)  # unchanged: nothing written
    (tmp_path / "c" / artifacts.RATINGS).unlink()  # the source's file gone: everything again
    assert night("d", first).rewritten and table() == expected(first)
    with db.transaction(path) as conn:  # the table no longer matches its source: everything again
        conn.exec_driver_sql("DELETE FROM ratings WHERE user_id = 1")
    assert night("e", second).rewritten and table() == expected(second)
    assert night("f", first.iloc[: len(first) // 3]).rewritten  # most of it changed: a rewrite is cheaper


def test_a_night_after_a_published_run_starts_als_from_its_factors(tmp_path):
    from recjobs import pipeline
    from support import small_published_settings

    settings = small_published_settings(tmp_path).replace(iterations=40)  # run "first", random start
    warm = pipeline.run(settings, "second").train
    assert warm.warm_started
    assert warm.iterations < 40

    def published_rows():
        with sqlite3.connect(settings.db) as con:
            return con.execute("SELECT user_id, rank, movie_id, score FROM current_recommendations").fetchall()

    rows = published_rows()
    again = pipeline.run(settings, "second").train  # a retried night starts from "first" again, not itself
    assert again.warm_started and published_rows() == rows
    cold = pipeline.run(settings.replace(warm_start=False), "third").train
    assert not cold.warm_started
    assert cold.iterations > warm.iterations
