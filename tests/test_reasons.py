"""Why a movie is in a list (because_movie_id): present, from the user's history, and faithful."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np

from recjobs.jobs import cold_start as cs
from recjobs.method import model, reasons, shards


def rows(db, sql, *args):
    with sqlite3.connect(db) as con:
        return con.execute(sql, args).fetchall()


def test_personalised_rows_have_a_reason_from_the_users_history(published_settings):
    db = published_settings.db
    ((n_rows, n_reasons),) = rows(db, "SELECT count(*), count(because_movie_id) FROM current_recommendations")
    assert n_reasons / n_rows >= 0.95, (n_reasons, n_rows)
    outside = rows(
        db,
        "SELECT count(*) FROM current_recommendations AS c WHERE because_movie_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM ratings AS r WHERE r.user_id = c.user_id AND r.movie_id = c.because_movie_id)",
    )
    assert outside == [(0,)]
    titled = rows(db, "SELECT count(*) FROM current_recommendations WHERE because_movie_id IS NOT NULL "
                  "AND because_title IS NULL")  # fmt: skip
    assert titled == [(0,)]


def test_reasons_are_faithful_removing_one_lowers_that_movies_score(published_settings):
    """For 100 sampled rows: the movie's blended score with the user folded in on their whole
    history, against the same with the reason left out of it. Goal: lower in at least 90%."""
    (run_id,) = rows(published_settings.db, "SELECT run_id FROM published_run")[0]
    scorer = shards.Scorer(published_settings, run_id)
    settings, movie_ids, ratings = scorer.settings, scorer.factors.movie_ids, scorer.ratings
    everyone = model.interactions(ratings, np.ones(len(ratings["rating"]), bool), scorer.factors.user_ids,
                                  movie_ids, settings, only_users=np.empty(0))  # fmt: skip
    sample = rows(
        published_settings.db,
        "SELECT user_id, movie_id, because_movie_id FROM current_recommendations WHERE because_movie_id IS NOT NULL "
        "ORDER BY (user_id * 7919 + rank * 104729) % 10007 LIMIT 100",
    )

    def score(user, movie, without=None):
        mine = (ratings["user_id"] == user) & (ratings["movie_id"] != (without or -1))
        history = {c: ratings[c][mine] for c in ratings}
        data = model.interactions(history, np.ones(mine.sum(), bool), np.array([user]), movie_ids, settings)
        data = dataclasses.replace(data, trending=everyone.trending)  # the run's trending, as the lists
        start = model.from_factors(
            np.zeros((1, settings.factors), np.float32), scorer.fitted.als.item_factors, settings
        )
        one = model.Fitted(start, scorer.fitted.similarity, scorer.fitted.sequence)
        folded = model.fold_in(one, np.array([0]), data.confidence, settings)
        return folded.scores(np.array([0]), data, settings)[0, np.searchsorted(movie_ids, movie)]

    lower = [score(u, m, without=b) < score(u, m) for u, m, b in sample]
    print(f"faithfulness: {np.mean(lower):.3f} of {len(lower)} sampled rows lose score without their reason")
    assert len(lower) == 100 and np.mean(lower) >= 0.9, np.mean(lower)


def test_the_reason_is_the_largest_share_and_none_when_nothing_adds():
    shares = np.array([[0.1, 0.5, -0.2], [-0.1, -0.3, -0.2]])
    assert reasons.best_contributors(shares, np.array([7, 8, 9])).tolist() == [8, reasons.NO_REASON]
    # the ALS shares add up to the fold-in's score (implicit's explain)
    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 4))
    history, confidence = np.array([1, 5, 9]), np.array([3.0, 11.0, 2.0])
    shares = reasons.als_shares(y, y.T @ y, 0.1, history, confidence, np.arange(30))
    a = y.T @ y + (y[history].T * (confidence - 1)) @ y[history] + 0.1 * np.eye(4)
    x = np.linalg.solve(a, (y[history] * confidence[:, None]).sum(axis=0))
    np.testing.assert_allclose(shares.sum(axis=1), y @ x)


def test_cold_start_answers_name_a_liked_movie(published_copy):
    answer = cs.cold_start(published_copy, [296, 318, 593], k=20)
    assert all(r.because_movie_id in (296, 318, 593) and r.because_title for r in answer.recommendations)
    with sqlite3.connect(published_copy.db) as con:
        stored = con.execute("SELECT count(because_movie_id) FROM cold_start_recommendations").fetchone()
    assert stored == (20,)
    popular = cs.cold_start(published_copy, [999999], k=5)  # nothing known: popularity, no reason
    assert popular.method == "popularity" and {r.because_movie_id for r in popular.recommendations} == {None}
