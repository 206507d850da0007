"""Diversity: re-rank a top list so its first page is not all one kind of movie, and measure it.

`rerank` is greedy MMR (maximal marginal relevance, Carbonell & Goldstein 1998) over a user's
best CANDIDATES * k movies: at each step it picks the candidate with the largest

    (1 - diversity) * relevance - diversity * (largest cosine similarity to the movies picked)

where relevance is the candidate's score min-max scaled to [0, 1] over the user's candidates
(the best 1, the worst 0; all 1 when they tie), and the similarity is the cosine of item
vectors (the ALS item factors). diversity 0 keeps the list as it is (exactly its first k);
diversity 1 ignores the scores after the first pick (always the best candidate). The scores
returned are the picked movies' own scores, in the new order, so stored scores stay the
method's. Numpy only, vectorised over users.

The two measures (Ziegler et al. 2005; Vargas & Castells 2011):
    intra-list diversity  mean over pairs of a list's movies of 1 - cosine of their item vectors
    genre coverage        the number of distinct genres among a list's movies
each per list (`list_diversity`, `list_genres`) and averaged over lists (users with fewer than 2
movies have no pairs and are left out of the intra-list mean).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..storage.artifacts import FILTERED, is_filtered

CANDIDATES = 3  # rerank looks at the best CANDIDATES * k movies of each user
NO_GENRES = "(no genres listed)"  # MovieLens' genres of a movie without any
RERANK_BATCH = 4096  # users re-ranked at once: users x candidates x candidates similarities


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """`vectors` with each row scaled to length 1 (a zero row stays zero), float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def check_diversity(diversity: float) -> float:
    diversity = float(diversity)
    if not 0.0 <= diversity <= 1.0:
        raise ConfigError(f"diversity {diversity:g} is outside 0-1; expected 0 (off) up to 1 (only diversity)")
    return diversity


def valid_entries(items: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """True where a top list holds a movie: not -1 padding, not scored FILTERED."""
    valid = np.asarray(items) >= 0
    return valid if scores is None else valid & ~is_filtered(scores)


def relevance(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each user's candidate scores min-max scaled to [0, 1] over their valid candidates (all 1
    when they tie); 0 where not valid."""
    scores = np.asarray(scores, dtype=np.float64)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    spread = high - low
    with np.errstate(invalid="ignore"):
        scaled = np.where(spread > 0, (scores - low) / np.where(spread > 0, spread, 1.0), 1.0)
    return np.where(valid, scaled, 0.0)


def rerank(
    candidate_items: np.ndarray,
    candidate_scores: np.ndarray,
    item_vectors: np.ndarray,
    diversity: float,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The k movies of each user's list re-ranked by greedy MMR (see the module's docstring):
    (items users x k, scores users x k). candidate_items: users x C item rows, best first, -1
    for padding (scored FILTERED); item_vectors: items x f (normalised here). Only candidates are
    picked; a user with fewer than k candidates keeps the padding (-1, FILTERED) at the end."""
    diversity = check_diversity(diversity)
    items = np.asarray(candidate_items)
    scores = np.asarray(candidate_scores)
    if items.shape != scores.shape or items.ndim != 2:
        raise ConfigError(
            f"rerank: candidate items {items.shape} and scores {scores.shape}; expected two users x C arrays"
        )
    if k < 0:
        raise ConfigError(f"rerank: k {k}; expected 0 or more")
    n_users, n_candidates = items.shape
    if diversity == 0.0 or n_candidates == 0:
        out_items = np.full((n_users, k), -1, items.dtype if items.size else np.int64)
        out_scores = np.full((n_users, k), FILTERED, scores.dtype if scores.size else np.float64)
        width = min(k, n_candidates)
        out_items[:, :width] = items[:, :width]
        out_scores[:, :width] = scores[:, :width]
        return out_items, out_scores
    unit = unit_rows(item_vectors)
    out_items = np.full((n_users, k), -1, items.dtype)
    out_scores = np.full((n_users, k), FILTERED, scores.dtype)
    for start in range(0, n_users, RERANK_BATCH):
        batch = slice(start, start + RERANK_BATCH)
        picks = mmr_order(items[batch], scores[batch], unit, diversity, k)  # candidate columns, -1: none
        found = picks >= 0
        columns = np.maximum(picks, 0)
        out_items[batch] = np.where(found, np.take_along_axis(items[batch], columns, axis=1), -1)
        out_scores[batch] = np.where(found, np.take_along_axis(scores[batch], columns, axis=1), FILTERED)
    return out_items, out_scores


def mmr_order(items: np.ndarray, scores: np.ndarray, unit: np.ndarray, diversity: float, k: int) -> np.ndarray:
    """The candidate columns greedy MMR picks for each user, users x k; -1 once none is left."""
    n_users, n_candidates = items.shape
    valid = valid_entries(items, scores)
    vectors = unit[np.maximum(items, 0)]  # users x C x f
    similarity = vectors @ vectors.transpose(0, 2, 1)  # users x C x C cosines
    gain = (1.0 - diversity) * relevance(scores, valid)
    closest = np.zeros((n_users, n_candidates))  # largest similarity to a picked movie (none yet: 0)
    open_ = valid.copy()
    picks = np.full((n_users, k), -1, np.int64)
    users = np.arange(n_users)
    for step in range(min(k, n_candidates)):
        value = np.where(open_, gain - diversity * closest, -np.inf)
        best = value.argmax(axis=1)  # ties: the better-ranked candidate
        some = open_[users, best]
        if not some.any():
            break
        picks[some, step] = best[some]
        open_[users[some], best[some]] = False
        picked_similarity = similarity[users, best]  # users x C
        closest = np.where(
            some[:, None], np.maximum(closest, picked_similarity) if step else picked_similarity, closest
        )
    return picks


def list_diversity(items: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """Per list (row of item rows, -1 padding): the mean of 1 - cosine over its pairs of movies;
    NaN for a list with fewer than 2 movies."""
    items = np.asarray(items)
    valid = valid_entries(items).astype(np.float64)
    vectors = unit_rows(item_vectors)[np.maximum(items, 0)] * valid[..., None]
    summed = vectors.sum(axis=1)
    n = valid.sum(axis=1)
    # sum over ordered pairs i != j of cos = |sum of vectors|^2 - sum of |v|^2
    norms = (vectors**2).sum(axis=2).sum(axis=1)
    pair_cosine = ((summed**2).sum(axis=1) - norms) / np.where(n > 1, n * (n - 1), 1.0)
    return np.where(n > 1, 1.0 - pair_cosine, np.nan)


def intra_list_diversity(items: np.ndarray, item_vectors: np.ndarray) -> float:
    """list_diversity averaged over the lists with at least 2 movies (NaN when none has)."""
    per_list = list_diversity(items, item_vectors)
    kept = per_list[~np.isnan(per_list)]
    return float(kept.mean()) if len(kept) else float("nan")


def genre_sets(genres) -> list[set]:
    """MovieLens genre strings ("Action|Comedy") as sets, NO_GENRES as the empty set."""
    return [{g for g in str(text).split("|") if g and g != NO_GENRES} for text in genres]


def genre_matrix(movie_genres: list) -> np.ndarray:
    """items x genres, True where the movie has the genre (genres in sorted order)."""
    names = sorted(set().union(*movie_genres)) if movie_genres else []
    column = {name: j for j, name in enumerate(names)}
    out = np.zeros((len(movie_genres), len(names)), bool)
    for i, genres in enumerate(movie_genres):
        out[i, [column[g] for g in genres]] = True
    return out


def list_genres(items: np.ndarray, movie_genres) -> np.ndarray:
    """Per list (row of item rows, -1 padding): the number of distinct genres of its movies.
    movie_genres: a set of genres per item row, or genre_matrix's items x genres array."""
    matrix = movie_genres if isinstance(movie_genres, np.ndarray) else genre_matrix(list(movie_genres))
    items = np.asarray(items)
    present = matrix[np.maximum(items, 0)] & valid_entries(items)[..., None]  # users x k x genres
    return present.any(axis=1).sum(axis=1).astype(np.float64)


def genre_coverage(items: np.ndarray, movie_genres) -> float:
    """The mean number of distinct genres per list (list_genres averaged over the lists)."""
    per_list = list_genres(items, movie_genres)
    return float(per_list.mean()) if len(per_list) else float("nan")
