"""Content scores for movies with too few ratings: genres, year and tags, mapped to ALS factors.

ALS and the item-item parts cannot score a movie nobody has rated. Its content can: one-hot
genres, a 5-year bucket of its year (or "no year") and its most common tags, one L2-normalised
row per movie (content_features). Two ways from there to a score for a user:
    ridge       a ridge regression from the content rows of rated movies to their ALS item
                factors (fit_content_to_factors); a new movie's predicted factors
                (content_factors) are scored like any movie's: user factors . item factors
    similarity  the user's positives' content rows summed, dotted with the movie's row
                (content_similarity)
    blend       both standardised per user and summed (content_blend)
The backtest's new-movies replay (recjobs.jobs.backtest.new_movies_replay) measures both
against genre popularity (genre_popularity, on genre_matrix).

In the nightly lists (setting min_ratings_to_score): the catalogue's movies with fewer ratings
than that (every unrated one among them) get the ridge's predicted factors in place of their ALS
ones (with_content_factors), so the method scores them like any movie.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

YEAR_BUCKET = 5  # years per year column
TOP_TAGS = 1000  # the most frequent tags become columns
RIDGE_MIN_RATINGS = 5  # the ridge learns from movies with at least this many ratings
RIDGE_ALPHA = 1.0  # the ridge's penalty


def content_features(
    movies: pd.DataFrame, tags: pd.DataFrame, movie_ids, top_tags: int = TOP_TAGS, year_bucket: int = YEAR_BUCKET
) -> sp.csr_matrix:
    """movie_ids x (genres, year buckets, tags): one-hot genres (split on '|', "(no genres
    listed)" left out), one year bucket (or "no year"), tags lower-cased and counted once per
    movie (the `top_tags` tagged on most movies, weighted by idf); each row L2-normalised, the
    three blocks weighted alike. Movies missing from `movies` get an empty row."""
    movie_ids = np.asarray(movie_ids)
    rows_of = pd.Series(np.arange(len(movie_ids)), index=movie_ids)
    listed = movies[movies["movie_id"].isin(movie_ids)]
    row = rows_of[listed["movie_id"].to_numpy()].to_numpy()
    blocks = []

    genres = listed["genres"].fillna("").str.split("|")
    genre_row = np.repeat(row, genres.str.len().to_numpy())
    genre = np.concatenate(genres.to_numpy()) if len(genres) else np.empty(0, str)
    named = (genre != "") & (genre != "(no genres listed)")
    blocks.append(one_hot(genre_row[named], genre[named], len(movie_ids)))

    year = pd.to_numeric(listed["year"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bucket = np.where(
        np.isnan(year), "no year", (np.nan_to_num(year) // year_bucket * year_bucket).astype(int).astype(str)
    )
    blocks.append(one_hot(row, bucket, len(movie_ids)))

    tagged = tags[tags["movie_id"].isin(movie_ids)]
    pairs = pd.DataFrame({"movie_id": tagged["movie_id"], "tag": tagged["tag"].str.strip().str.lower()})
    pairs = pairs[pairs["tag"] != ""].drop_duplicates()
    movies_per_tag = pairs["tag"].value_counts()
    kept = movies_per_tag.index[:top_tags]
    pairs = pairs[pairs["tag"].isin(kept)]
    idf = np.log((1 + len(movie_ids)) / (1 + movies_per_tag[pairs["tag"]].to_numpy())) + 1
    blocks.append(
        one_hot(rows_of[pairs["movie_id"].to_numpy()].to_numpy(), pairs["tag"].to_numpy(), len(movie_ids), idf)
    )

    return normalized_rows(sp.hstack([normalized_rows(b) for b in blocks]).tocsr())


def one_hot(rows: np.ndarray, labels: np.ndarray, n_rows: int, values: np.ndarray | None = None) -> sp.csr_matrix:
    """n_rows x distinct labels (sorted), `values` (default 1) at (row, label)."""
    names, cols = np.unique(np.asarray(labels, str), return_inverse=True)
    values = np.ones(len(rows)) if values is None else values
    out = sp.csr_matrix((values, (rows, cols)), shape=(n_rows, len(names)))
    out.sum_duplicates()
    return out


def normalized_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its L2 norm (empty rows stay empty)."""
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m


def fit_content_to_factors(features_known: sp.csr_matrix, item_factors_known: np.ndarray, alpha: float = 1.0):
    """Ridge regression with an intercept from content rows to ALS item factors, closed form:
    (W, intercept) with factors ~ intercept + features @ W; W is features x factors."""
    x = sp.csr_matrix(features_known, dtype=np.float64)
    y = np.asarray(item_factors_known, np.float64)
    x_mean, y_mean = np.asarray(x.mean(axis=0)).ravel(), y.mean(axis=0)
    gram = (x.T @ x).toarray() - len(y) * np.outer(x_mean, x_mean)  # centred, without densifying x
    cross = x.T @ y - len(y) * np.outer(x_mean, y_mean)
    w = np.linalg.solve(gram + alpha * np.eye(x.shape[1]), cross)
    return w, y_mean - x_mean @ w


def content_factors(features: sp.csr_matrix, fitted) -> np.ndarray:
    """Predicted ALS item factors of movies from their content rows; `fitted`: (W, intercept)."""
    w, intercept = fitted
    return np.asarray(features @ w) + intercept


def new_movie_factors(
    features_known: sp.csr_matrix,
    item_factors_known: np.ndarray,
    n_ratings_known: np.ndarray,
    features_new: sp.csr_matrix,
    min_ratings: int = RIDGE_MIN_RATINGS,
    alpha: float = RIDGE_ALPHA,
) -> np.ndarray:
    """Predicted ALS item factors of new movies (features_new rows): the ridge learned from the
    known movies with at least `min_ratings` ratings (their content rows, factors, counts)."""
    enough = np.asarray(n_ratings_known) >= min_ratings
    ridge = fit_content_to_factors(features_known[enough], np.asarray(item_factors_known)[enough], alpha)
    return content_factors(features_new, ridge)


def catalogue_movie_ids(rated_movie_ids: np.ndarray, movies: pd.DataFrame, min_ratings_to_score: int) -> np.ndarray:
    """The movies a night scores (sorted): those rated, and with min_ratings_to_score above 0
    every movie of the catalogue too."""
    if min_ratings_to_score <= 0:
        return np.asarray(rated_movie_ids)
    return np.union1d(rated_movie_ids, movies["movie_id"].to_numpy(np.int64))


@dataclass(frozen=True)
class ContentScored:
    item_factors: np.ndarray  # the ALS item factors, the thin movies' rows predicted from content
    n_movies: int  # movies given content factors (fewer ratings than min_ratings_to_score)
    n_unrated: int  # of them, movies with no rating at all
    rows: np.ndarray | None = None  # their rows, None when there are none
    als_factors: np.ndarray | None = None  # their factors as ALS left them


def with_content_factors(
    item_factors: np.ndarray,
    features: sp.csr_matrix,
    n_ratings: np.ndarray,
    min_ratings_to_score: int,
    alpha: float = RIDGE_ALPHA,
) -> ContentScored:
    """`item_factors` with the rows of movies rated fewer than `min_ratings_to_score` times
    replaced by their content prediction: the ridge learned from the movies with at least
    max(RIDGE_MIN_RATINGS, min_ratings_to_score) ratings (features, n_ratings: one row per movie)."""
    n_ratings = np.asarray(n_ratings)
    thin = n_ratings < min_ratings_to_score
    enough = n_ratings >= max(RIDGE_MIN_RATINGS, min_ratings_to_score)
    if not thin.any() or enough.sum() < 2:
        return ContentScored(item_factors, 0, 0)
    ridge = fit_content_to_factors(features[enough], item_factors[enough], alpha)
    out = np.array(item_factors, np.float32, copy=True)
    out[thin] = content_factors(features[thin], ridge)
    rows = np.flatnonzero(thin)
    return ContentScored(out, len(rows), int((n_ratings[thin] == 0).sum()), rows, np.array(item_factors[rows]))


def score_thin_movies(
    fitted, seen: sp.csr_matrix, movies: pd.DataFrame, tags: pd.DataFrame, movie_ids, min_ratings_to_score: int
):
    """(the fit with the ALS item factors of the movies rated fewer than min_ratings_to_score
    times in it predicted from their content, ContentScored): the nightly content step, as train
    and the backtest's nights make it. `fitted`: a recjobs.method.model.Fitted (its ALS model
    gets the new item factors); `seen`: the fit's users x movie_ids ratings."""
    if min_ratings_to_score <= 0:
        return fitted, ContentScored(fitted.als.item_factors, 0, 0)
    n_ratings = np.bincount(seen.indices, minlength=len(movie_ids))
    features = content_features(movies, tags, movie_ids)
    scored = with_content_factors(fitted.als.item_factors, features, n_ratings, min_ratings_to_score)
    fitted.als.item_factors = scored.item_factors
    return dataclasses.replace(fitted, content_rows=scored.rows, content_als_factors=scored.als_factors), scored


def content_similarity(positives: sp.csr_matrix, features_known: sp.csr_matrix, features: sp.csr_matrix) -> np.ndarray:
    """users x movies: the content rows of each user's positives (users x known movies) summed,
    normalised, dotted with each movie's content row."""
    profile = normalized_rows(sp.csr_matrix(positives, dtype=np.float64) @ features_known)
    return np.asarray((profile @ features.T).todense())


def content_blend(ridge_scores: np.ndarray, similarity_scores: np.ndarray) -> np.ndarray:
    """The two content scores (users x movies) standardised per user over the movies, summed."""
    return standardized_rows(ridge_scores) + standardized_rows(similarity_scores)


def standardized_rows(scores: np.ndarray) -> np.ndarray:
    """(x - the row's mean) / the row's standard deviation (1 where it is 0)."""
    scores = np.asarray(scores, np.float64)
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def genre_matrix(movies: pd.DataFrame, movie_ids) -> sp.csr_matrix:
    """movie_ids x genres (every genre in `movies`, sorted): 1 per genre of the movie."""
    movie_ids = np.asarray(movie_ids)
    listed = movies[movies["movie_id"].isin(movie_ids)]
    genres = listed["genres"].fillna("").str.split("|")
    row = np.repeat(
        pd.Series(np.arange(len(movie_ids)), index=movie_ids)[listed["movie_id"]].to_numpy(), genres.str.len()
    )
    genre = np.concatenate(genres.to_numpy()) if len(genres) else np.empty(0, str)
    named = (genre != "") & (genre != "(no genres listed)")
    names = np.unique(np.concatenate(movies["genres"].fillna("").str.split("|").to_numpy()))
    cols = np.searchsorted(names, genre[named])
    out = sp.csr_matrix((np.ones(int(named.sum())), (row[named], cols)), shape=(len(movie_ids), len(names)))
    out.data[:] = 1
    return out


def genre_popularity(
    positives: sp.csr_matrix,
    genres_known: sp.csr_matrix,
    genres: sp.csr_matrix,
    personal: bool = False,
    prior: float = 10.0,
) -> np.ndarray:
    """The genre-popularity baseline, users x movies: a movie's score is the mean over its genres
    of that genre's share of the positives (positives: users x known movies; genres_known,
    genres: their genre_matrix rows). personal: each user's own shares, smoothed with `prior`
    positives' worth of everyone's."""
    per_user = np.asarray((sp.csr_matrix(positives, dtype=np.float64) @ genres_known).todense())
    n_positives = np.asarray(positives.sum(axis=1), np.float64)
    overall = per_user.sum(axis=0) / max(n_positives.sum(), 1.0)
    if personal:
        share = (per_user + prior * overall) / (n_positives + prior)
    else:
        share = np.broadcast_to(overall, per_user.shape)
    mean_of_genres = normalized_counts(genres)
    return np.asarray(mean_of_genres @ share.T).T


def normalized_counts(m: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its number of entries (a mean over them)."""
    counts = np.diff(m.indptr).astype(np.float64)
    return sp.diags(1.0 / np.maximum(counts, 1.0)) @ sp.csr_matrix(m, dtype=np.float64)
