"""New movies in the nightly lists: catalogue movies nobody has rated (yet) are scored from their
content (min_ratings_to_score), published, served over the JSON API and explained."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from recjobs import pipeline
from recjobs.method import bundle, model, scoring
from recjobs.settings import Settings
from recjobs.storage import artifacts
from support import query, require_shared_data, running_server

# two movies added to ml-latest-small's catalogue with nobody's rating: the genres, year bucket
# and tags of a much-liked one each
NEW_MOVIES = {900001: (2571, "Matrix Reborn (1999)"), 900002: (4993, "Rings Again (2001)")}


@pytest.fixture(scope="module")
def catalogue_with_new_movies(tmp_path_factory):
    root = tmp_path_factory.mktemp("new-movies")
    data = shutil.copytree(require_shared_data(), root / "data")
    with open(data / "movies.csv", newline="") as f:
        genres = {row["movieId"]: row["genres"] for row in csv.DictReader(f)}
    with open(data / "tags.csv", newline="") as f:
        tags = list(csv.DictReader(f))
    with open(data / "movies.csv", "a", newline="") as f:
        csv.writer(f).writerows([new, title, genres[str(like)]] for new, (like, title) in NEW_MOVIES.items())
    with open(data / "tags.csv", "a", newline="") as f:
        rows = [
            [t["userId"], new, t["tag"], t["timestamp"]]
            for new, (like, _) in NEW_MOVIES.items()
            for t in tags
            if t["movieId"] == str(like)
        ]
        csv.writer(f).writerows(rows)
    settings = Settings(data_dir=data, db=root / "recs.db", artifacts=root / "artifacts")
    result = pipeline.run(settings, "first")
    assert result.precompute.status == "published"
    return settings, result


def test_unrated_movies_are_scored_from_content_and_enter_the_published_lists(catalogue_with_new_movies, tmp_path):
    settings, result = catalogue_with_new_movies
    unrated = {
        m
        for (m,) in query(
            settings.db, "SELECT movie_id FROM movies WHERE movie_id NOT IN (SELECT movie_id FROM ratings)"
        )
    }
    assert set(NEW_MOVIES) <= unrated
    assert (
        result.train.n_unrated_movies >= len(unrated) and result.train.n_content_movies >= result.train.n_unrated_movies
    )
    published = model.Factors.read(
        artifacts.run_dir(settings.artifacts, "first") / artifacts.model_file(artifacts.FULL)
    )
    assert set(NEW_MOVIES) <= set(published.content_movie_ids.tolist()) <= set(published.movie_ids.tolist())
    rows = published.content_rows[np.isin(published.content_movie_ids, list(NEW_MOVIES))]
    assert (np.linalg.norm(published.item_factors[rows], axis=1) > 0).all()  # ALS alone would leave them at 0

    # SQL: the new movies are in lists, each with a reason the user rated
    listed = query(
        settings.db,
        "SELECT user_id, movie_id, rank, because_movie_id FROM current_recommendations WHERE movie_id IN (?, ?)",
        *NEW_MOVIES,
    )
    assert {movie for _, movie, _, _ in listed} == set(NEW_MOVIES)
    assert len(listed) >= 10
    for user, _, _, because in listed:
        assert query(settings.db, "SELECT 1 FROM ratings WHERE user_id = ? AND movie_id = ?", user, because)

    # similar movies: a new movie has its own, and no
    # content-scored movie is listed as anyone's similar movie
    for new in NEW_MOVIES:
        similar = [
            m for (m,) in query(settings.db, "SELECT similar_movie_id FROM similar_movies WHERE movie_id = ?", new)
        ]
        assert len(similar) == settings.n_similar
    content_ids = [int(m) for m in published.content_movie_ids]
    listed_similar = {m for (m,) in query(settings.db, "SELECT DISTINCT similar_movie_id FROM similar_movies")}
    assert not listed_similar & set(content_ids)

    # the JSON API serves them, titles and all
    user, movie, rank, _ = min(listed, key=lambda row: row[2])
    with running_server(settings.db, tmp_path / "serve.log", workers=1) as server:
        answer = server.rows("recommendations_for_user", user_id=str(user), k="50")
    assert {"movie_id": movie, "rank": rank, "title": NEW_MOVIES[movie][1]}.items() <= next(
        row for row in answer if row["movie_id"] == movie
    ).items()


def test_off_no_unrated_movie_is_known(catalogue_with_new_movies, tmp_path):
    settings, _ = catalogue_with_new_movies
    off = Settings(
        data_dir=settings.data_dir, db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts", min_ratings_to_score=0
    )
    result = pipeline.run(off, "off")
    assert result.train.n_content_movies == 0
    published = model.Factors.read(artifacts.run_dir(off.artifacts, "off") / artifacts.model_file(artifacts.FULL))
    assert not np.isin(list(NEW_MOVIES), published.movie_ids).any() and len(published.content_movie_ids) == 0
    assert not query(off.db, "SELECT 1 FROM current_recommendations WHERE movie_id IN (?, ?)", *NEW_MOVIES)


def test_the_blend_gives_content_movies_their_als_score_for_each_item_item_part():
    als = np.array([[3.0, 1.0, 2.0, 0.0]])
    part = np.array([[0.0, 5.0, 1.0, 0.0]])
    plain = scoring.blend(als, [(0.5, part)])
    imputed = scoring.blend(als, [(0.5, part)], content_rows=np.array([3]))
    np.testing.assert_array_equal(imputed[:, :3], plain[:, :3])
    assert imputed[0, 3] == pytest.approx(scoring.standardized(als)[0, 3] * 1.5)
    # the cold-start bundle keeps the rows and scores with them
    made = bundle.make_bundle("r", np.arange(4), np.eye(4, 2), np.ones(4), {"alpha": 1, "regularization": 0.1})
    assert made.content_rows is None
    made = bundle.make_bundle(
        "r", np.arange(4), np.eye(4, 2), np.ones(4), {"alpha": 1, "regularization": 0.1}, content_rows=[3]
    )
    assert made.content_rows.tolist() == [3]
