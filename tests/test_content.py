"""content: genres, year and tags as features, mapped to ALS factors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recjobs.method import content


def catalogue():
    movies = pd.DataFrame(
        {
            "movie_id": [1, 2, 3, 4],
            "title": ["A (1994)", "B (1997)", "C", "D (2011)"],
            "genres": ["Comedy|Drama", "Comedy", "(no genres listed)", "Horror"],
            "year": pd.array([1994, 1997, None, 2011], dtype="Int64"),
        }
    )
    tags = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 1],
            "movie_id": [1, 1, 2, 4],
            "tag": ["Funny", "funny ", "funny", "gore"],
            "tagged_at": [10, 20, 30, 40],
        }
    )
    return movies, tags


def test_features_have_a_row_per_movie_in_order_and_unit_norm():
    movies, tags = catalogue()
    features = content.content_features(movies, tags, [4, 1, 2, 3, 99])
    # 3 genres, 4 year buckets (1990, 1995, 2010, no year), 2 tags ("funny" counted once per movie)
    assert features.shape == (5, 3 + 4 + 2)
    norms = np.sqrt(np.asarray(features.multiply(features).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, [1, 1, 1, 1, 0])  # 99 is not in movies.csv: an empty row
    dense = features.toarray()
    assert dense[1] @ dense[2] > dense[1] @ dense[0] == 0  # 1 and 2 share Comedy and "funny"; 4 shares nothing
    assert (dense[3] > 0).sum() == 1  # no genres, no tags: only "no year"
    assert content.content_features(movies, tags, [1, 2], top_tags=1).shape[1] == 2 + 2 + 1


def test_the_ridge_recovers_factors_of_a_linear_example():
    rng = np.random.default_rng(0)
    features = sp.random(400, 30, density=0.2, random_state=1, format="csr")
    weights, intercept = rng.normal(size=(30, 5)), rng.normal(size=5)
    factors = intercept + features @ weights
    fitted = content.fit_content_to_factors(features[:300], factors[:300], alpha=1e-6)
    np.testing.assert_allclose(content.content_factors(features[300:], fitted), factors[300:], atol=1e-4)
    shrunk = content.fit_content_to_factors(features[:300], factors[:300], alpha=1e3)
    assert np.abs(shrunk[0]).sum() < np.abs(fitted[0]).sum()  # the penalty shrinks the weights
    # the nightly's call: movies with too few ratings (their factors are noise here) are left out
    noisy = np.where(np.arange(300)[:, None] < 100, rng.normal(size=(300, 5)) * 10, factors[:300])
    n_ratings = np.where(np.arange(300) < 100, 2, 50)
    predicted = content.new_movie_factors(features[:300], noisy, n_ratings, features[300:], 5, alpha=1e-6)
    np.testing.assert_allclose(predicted, factors[300:], atol=1e-4)


def test_content_similarity_and_genre_popularity():
    movies, tags = catalogue()
    features = content.content_features(movies, tags, [1, 4, 2, 3])  # one set of columns for all
    known, new = features[:2], features[2:]
    positives = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]))  # user 0 liked movie 1, user 1 movie 4
    similarity = content.content_similarity(positives, known, new)
    assert similarity[0, 0] > similarity[0, 1] and similarity[1, 0] == 0

    genres = content.genre_matrix(movies, [1, 4, 2, 3])
    assert genres.shape == (4, 4) and genres.sum() == 4  # (no genres listed) is a column, never set
    many = sp.csr_matrix(np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]]))  # 3 users liked the comedy, 1 the horror
    overall = content.genre_popularity(many, genres[:2], genres[2:])
    # Comedy: 3 of 4 positives; a movie without genres scores 0; everyone ranks alike
    np.testing.assert_allclose(overall, [[0.75, 0.0]] * 4)
    own = content.genre_popularity(many, genres[:2], genres[2:], personal=True, prior=1.0)
    assert own[0, 0] > own[3, 0] > 0  # the horror fan's comedy share is smoothed toward everyone's


def test_thin_movies_get_their_content_prediction_and_the_rest_keep_their_factors():
    rng = np.random.default_rng(0)
    n_movies, n_features = 2000, 6
    features = sp.csr_matrix(rng.random((n_movies, n_features)))
    truth = rng.normal(size=(n_features, 3))
    als = np.asarray(features @ truth, np.float32)
    n_ratings = np.full(n_movies, 20)
    n_ratings[:4] = [0, 0, 1, 2]  # two unrated, two thin
    als[:4] = 0.0  # what ALS makes of too little data
    scored = content.with_content_factors(als, features, n_ratings, min_ratings_to_score=3)
    assert (scored.n_movies, scored.n_unrated) == (4, 2)
    np.testing.assert_array_equal(scored.item_factors[4:], als[4:])
    np.testing.assert_allclose(scored.item_factors[:4], (features[:4] @ truth), atol=0.05)
    assert not np.shares_memory(scored.item_factors, als)  # the fit's own factors are left as they were
    # 1: only the unrated ones; 0: nothing changes
    assert content.with_content_factors(als, features, n_ratings, 1).n_movies == 2
    assert content.with_content_factors(als, features, n_ratings, 0).item_factors is als


def test_the_night_knows_every_movie_of_the_catalogue_when_content_scores_are_on():
    movies, _ = catalogue()
    rated = np.array([2, 7])
    assert content.catalogue_movie_ids(rated, movies, 1).tolist() == [1, 2, 3, 4, 7]
    assert content.catalogue_movie_ids(rated, movies, 0).tolist() == [2, 7]
