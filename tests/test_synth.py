"""recjobs synth: MovieLens-layout data of any size, deterministic, with long tails, tastes and
sessions; the whole nightly run passes on it and its model beats popularity."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recjobs import pipeline
from recjobs.jobs.synth import MIN_RATINGS_PER_USER, SERIES_LENGTH, synth
from recjobs.settings import Settings
from recjobs.storage import movielens

FILES = ("movies.csv", "ratings.csv", "links.csv", "tags.csv")


def digest(folder) -> dict:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth") / "set"
    result = synth(2_000, 1_200, 120_000, 7, folder)
    return folder, result


def test_the_same_seed_writes_the_same_files_and_another_seed_others(small_set, tmp_path):
    folder, _ = small_set
    again = synth(2_000, 1_200, 120_000, 7, tmp_path / "again")
    other = synth(2_000, 1_200, 120_000, 8, tmp_path / "other")
    assert digest(folder) == digest(tmp_path / "again") and again.n_ratings == 120_000
    assert digest(tmp_path / "other")["ratings.csv"] != digest(folder)["ratings.csv"] and other.n_ratings == 120_000
    assert not list(folder.glob(".*.partial"))


def test_the_files_are_movielens_layout_and_pass_the_loaders_checks(small_set):
    folder, result = small_set
    catalog = movielens.read_catalog(folder)
    ratings = catalog.ratings
    assert (result.n_users, result.n_movies, result.n_ratings) == (2_000, 1_200, 120_000)
    assert len(ratings) == 120_000 and ratings["user_id"].nunique() == 2_000
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    assert ratings.groupby("user_id").size().min() >= MIN_RATINGS_PER_USER
    assert set(np.unique(ratings["rating"])) <= {x / 2 for x in range(1, 11)}
    years = pd.to_datetime(ratings["rated_at"], unit="s").dt.year
    assert years.min() >= 1996 and years.max() <= 2023 and years.nunique() > 20
    assert len(catalog.movies) == 1_200 and catalog.movies["year"].notna().all()
    header = (folder / "ratings.csv").read_text().splitlines()[:2]
    assert header[0] == "userId,movieId,rating,timestamp" and header[1].count(",") == 3


def test_popularity_and_activity_have_long_tails(small_set):
    ratings = pd.read_csv(small_set[0] / "ratings.csv")
    per_movie = ratings.groupby("movieId").size().sort_values(ascending=False)
    assert per_movie.iloc[: len(per_movie) // 10].sum() > 0.35 * len(ratings)  # top 10% of movies
    per_user = ratings.groupby("userId").size()
    assert per_user.max() > 8 * per_user.median() and per_user.min() == MIN_RATINGS_PER_USER


def test_sessions_put_a_series_next_part_right_after_the_one_before(small_set):
    ratings = pd.read_csv(small_set[0] / "ratings.csv").sort_values(["userId", "timestamp", "movieId"])
    same_user = ratings["userId"].to_numpy()[1:] == ratings["userId"].to_numpy()[:-1]
    movie = ratings["movieId"].to_numpy()
    next_part = (movie[1:] == movie[:-1] + 1) & ((movie[:-1] - 1) % SERIES_LENGTH < SERIES_LENGTH - 1)
    assert (next_part & same_user).sum() / same_user.sum() > 0.15  # by chance: about 1 in 1,200


def test_a_nightly_run_on_a_synthetic_set_publishes_a_model_that_beats_popularity(tmp_path):
    data = tmp_path / "data"
    synth(2_000, 1_500, 200_000, 11, data)
    settings = Settings(data_dir=data, db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts")
    result = pipeline.run(settings, "synthetic")
    assert result.precompute.status == "published"
    metrics = result.evaluate
    assert metrics.recall_at_10 > 1.5 * metrics.popularity_recall_at_10, metrics


@pytest.mark.parametrize(
    "users, movies, ratings, message",
    [
        ("100", "500", "1000", "synth: 1000 ratings for 100 users; expected at least 2000 (20 per user"),
        ("100", "30", "3000", "synth: 30 movies; expected at least 40"),
        ("10", "100", "2000", "synth: 2000 ratings for 10 users and 100 movies; expected at most 250"),
        ("0", "100", "2000", "synth: 0 users and 100 movies; expected at least 1 of each"),
    ],
)
def test_impossible_sizes_are_one_line_errors(tmp_path, users, movies, ratings, message):
    done = subprocess.run(
        [sys.executable, "-m", "recjobs", "synth", "--users", users, "--movies", movies, "--ratings", ratings]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.startswith(f"Error: {message}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
