"""The temporal protocol: the lists users see the day after a night, scored.

A window is [cutoff, end): a model fitted on the ratings made before `cutoff` (as a nightly run
at `cutoff` fits it) is scored, for each user known at the cutoff, on the movies they rated at
or above the positive threshold inside the window. Movies first rated in the window are left
out of the targets (no model could recommend them) unless the window is given them as the
catalogue's unrated movies; every movie a user rated before the cutoff is filtered.
Recall@10 = hits / min(10, targets); NDCG@10 binary.

`recjobs backtest` replays nights with it; the full night's blend choice
(recjobs.evaluation.blend_choice) scores its grid of blend weights with it, on one fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..method import model, scoring
from ..settings import Settings
from .holdout import user_keys
from .metrics import CUTOFF

DAY = 86_400


@dataclass(frozen=True)
class Window:
    """One window's users and targets, and the ratings a model for it may see."""

    cutoff: int
    end: int
    keep: np.ndarray  # ratings made before the cutoff
    user_ids: np.ndarray  # users known at the cutoff (a rating before it), sorted
    movie_ids: np.ndarray  # movies known at the cutoff, sorted
    test_user_ids: np.ndarray  # known users with a target in the window (sampled), sorted
    targets: sp.csr_matrix  # test users x movie_ids: 1 per target

    @property
    def rows(self) -> np.ndarray:
        """The test users' rows in user_ids."""
        return model.index(self.test_user_ids, self.user_ids)


def window(
    ratings: dict,
    cutoff: int,
    end: int,
    settings: Settings,
    max_users: int = 0,
    sample_seed: int = 0,
    unrated_movie_ids: np.ndarray | None = None,
) -> Window | None:
    """The window [cutoff, end) of `ratings` (arrays of user_id, movie_id, rating, rated_at);
    None when no known user rated a known movie positively inside it. `max_users` (0: all):
    a user-keyed seeded sample of the test users when there are more. `unrated_movie_ids`:
    movies in the catalogue at the cutoff that nobody has rated yet, known (and targets) too."""
    before = ratings["rated_at"] < cutoff
    user_ids = np.unique(ratings["user_id"][before])
    movie_ids = np.unique(ratings["movie_id"][before])
    if unrated_movie_ids is not None:
        movie_ids = np.union1d(movie_ids, unrated_movie_ids)
    later = (
        (ratings["rating"] >= settings.positive_threshold)
        & (ratings["rated_at"] >= cutoff)
        & (ratings["rated_at"] < end)
        & np.isin(ratings["user_id"], user_ids)
        & np.isin(ratings["movie_id"], movie_ids)
    )
    if not later.any():
        return None
    test_user_ids = np.unique(ratings["user_id"][later])
    if max_users and len(test_user_ids) > max_users:
        chosen = np.argsort(user_keys(test_user_ids, sample_seed), kind="stable")[:max_users]
        test_user_ids = np.sort(test_user_ids[chosen])
        later &= np.isin(ratings["user_id"], test_user_ids)
    targets = sp.csr_matrix(
        (
            np.ones(int(later.sum()), np.float32),
            (model.index(ratings["user_id"][later], test_user_ids), model.index(ratings["movie_id"][later], movie_ids)),
        ),
        shape=(len(test_user_ids), len(movie_ids)),
    )
    targets.sum_duplicates()
    targets.data[:] = 1
    return Window(int(cutoff), int(end), before, user_ids, movie_ids, test_user_ids, targets)


def list_metrics(top: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    """(Recall@10, NDCG@10, hit) per user of top lists (item rows, -1 for padding) against their
    rows of `targets`."""
    top = np.asarray(top)[:, :CUTOFF]
    hit = np.zeros(top.shape, bool)
    for start in range(0, len(top), 1024):
        chunk = slice(start, start + 1024)
        dense = targets[chunk].toarray() > 0
        found = np.take_along_axis(dense, np.maximum(top[chunk], 0), axis=1)
        hit[chunk] = found & (top[chunk] >= 0)
    n_targets = np.diff(targets.indptr)
    ideal = np.minimum(CUTOFF, n_targets)
    discount = 1.0 / np.log2(np.arange(CUTOFF) + 2.0)
    idcg = np.concatenate([[0.0], np.cumsum(discount)])[ideal]
    recall = hit.sum(axis=1) / np.maximum(ideal, 1)
    ndcg = (hit * discount[: top.shape[1]]).sum(axis=1) / np.where(idcg > 0, idcg, 1.0)
    return np.column_stack([recall, ndcg, hit.any(axis=1).astype(float)])


def trending_vectors(ratings: dict, win: Window, settings: Settings, days_grid) -> dict[float, np.ndarray]:
    """Per trend_days: the standardized log1p positives per movie in those days before the
    newest rating before the cutoff (what a nightly run at the cutoff blends in)."""
    keep = win.keep
    cols = model.index(ratings["movie_id"][keep], win.movie_ids)
    positive = ratings["rating"][keep] >= settings.positive_threshold
    out = {}
    for days in days_grid:
        counts = scoring.trending_counts(ratings["rated_at"][keep], cols, positive, len(win.movie_ids), days)
        out[days] = scoring.standardized(np.log1p(counts.astype(np.float64)))
    return out


def blend_grid_metrics(
    fitted: model.Fitted, data: model.Interactions, win: Window, trends: dict, grid, settings: Settings
) -> np.ndarray:
    """Per-user (Recall@10, NDCG@10, hit) of the method's blend for every grid point
    (trend_weight, trend_days, cosine_scale, sequence_scale) on one fit: grid point x user x
    metric. The blend is the one Fitted.scores makes, with blend_weight and sequence_weight
    times their scales."""
    rows = win.rows
    n_items = len(win.movie_ids)
    out = np.zeros((len(grid), len(rows), 3))
    batch_size = model.score_batch(n_items)
    parts = (
        (settings.blend_weight, fitted.similarity, data.profile),
        (settings.sequence_weight, fitted.sequence, data.recent),
    )
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        als = scoring.standardized(fitted.als.user_factors[batch] @ fitted.als.item_factors.T, overwrite=True)
        cosine, sequence = (np.zeros_like(als) for _ in parts)
        for (weight, similarity, profile), part in zip(parts, (cosine, sequence), strict=True):
            if similarity is not None and weight > 0:
                scoring.add_standardized_sparse(part, weight, (profile[batch] @ similarity).tocsr())
        seen_rows, seen_cols = data.seen[batch].nonzero()
        targets = win.targets[start : start + len(batch)]
        for g, (trend_weight, trend_days, cosine_scale, sequence_scale) in enumerate(grid):
            total = als + cosine_scale * cosine + sequence_scale * sequence
            if trend_weight > 0:
                total += trend_weight * trends[trend_days]
            top, _ = scoring.top_n(total, seen_rows, seen_cols, CUTOFF, overwrite=True)
            out[g, start : start + len(batch)] = list_metrics(top, targets)
    return out


def score_top(scores_of_batch, win: Window, seen: sp.csr_matrix) -> np.ndarray:
    """Per-user metrics of any scorer: scores_of_batch(rows) -> dense users x items scores."""
    rows = win.rows
    out = np.zeros((len(rows), 3))
    batch_size = model.score_batch(len(win.movie_ids))
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        scores = np.array(scores_of_batch(batch), dtype=np.float64)
        top, _ = scoring.top_n(scores, *seen[batch].nonzero(), CUTOFF, overwrite=True)
        out[start : start + len(batch)] = list_metrics(top, win.targets[start : start + len(batch)])
    return out


def popularity_scores(ratings: dict, win: Window, settings: Settings, since: float = -np.inf) -> np.ndarray:
    """Positives per movie before the cutoff (from `since` on): the popularity baselines. Ties
    (most movies have no recent positive) go to the movie with more positives of all time, not
    to the smaller movie id, which on MovieLens is an older, more popular film."""
    positive = win.keep & (ratings["rating"] >= settings.positive_threshold)
    columns = model.index(ratings["movie_id"][positive], win.movie_ids)
    counts = np.bincount(columns[ratings["rated_at"][positive] >= since], minlength=len(win.movie_ids))
    all_time = np.bincount(columns, minlength=len(win.movie_ids))
    return counts + all_time / (all_time.max(initial=0) + 1.0)
