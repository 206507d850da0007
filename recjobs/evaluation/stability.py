"""How much a run's lists move against the served run's: churn@10 (1 - Jaccard of each user's
top 10) and rank-biased overlap (RBO, Webber et al. 2010, extrapolated, p = 0.9), over the
users both runs list, and over those of them with no new rating since the served run's data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEPTH = 10
RBO_P = 0.9


@dataclass(frozen=True)
class Stability:
    n_users: int  # users both runs list
    n_unchanged: int  # of them, with no new rating (and no list refreshed since the night)
    churn_at_10: float | None
    churn_at_10_unchanged: float | None
    rbo_at_10: float | None
    rbo_at_10_unchanged: float | None

    def metric_rows(self) -> list[tuple[str, str, float]]:
        values = {
            "n_users_compared": self.n_users,
            "n_users_unchanged": self.n_unchanged,
            "churn_at_10": self.churn_at_10,
            "churn_at_10_unchanged": self.churn_at_10_unchanged,
            "rbo_at_10": self.rbo_at_10,
            "rbo_at_10_unchanged": self.rbo_at_10_unchanged,
        }
        return [(name, "stability", float(v)) for name, v in values.items() if v is not None]


def overlaps(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """users x DEPTH: |new[:d] ∩ old[:d]| for d = 1..DEPTH, per user (rows of movie ids; -1 pads)."""
    same = (new[:, :, None] == old[:, None, :]) & (new[:, :, None] >= 0)
    return same.cumsum(axis=1).cumsum(axis=2)[:, np.arange(DEPTH), np.arange(DEPTH)]


def churn(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """1 - Jaccard of each user's two top-DEPTH sets."""
    common = overlaps(new, old)[:, -1]
    union = (new >= 0).sum(axis=1) + (old >= 0).sum(axis=1) - common
    return 1.0 - np.where(union > 0, common / np.maximum(union, 1), 1.0)


def rbo(new: np.ndarray, old: np.ndarray, p: float = RBO_P) -> np.ndarray:
    """Extrapolated RBO of each user's two rankings of DEPTH (1: the same ranking)."""
    agreement = overlaps(new, old) / np.arange(1, DEPTH + 1)
    depths = np.arange(1, DEPTH + 1)
    return agreement[:, -1] * p**DEPTH + (1 - p) / p * (agreement * p**depths).sum(axis=1)


def compare(
    user_ids: np.ndarray, top_movie_ids: np.ndarray, served: dict[int, np.ndarray], unchanged: np.ndarray
) -> Stability:
    """Stability of a run's lists (rows of movie ids per user, best first) against the served
    run's top lists (`served`: user id -> its movie ids, best first). `unchanged`: per user of
    `user_ids`, True when the user has no new rating since the served run's data."""
    both = np.array([int(u) in served for u in user_ids], bool)
    if not both.any():
        return Stability(0, 0, None, None, None, None)
    new = _padded(top_movie_ids[both])
    old = _padded([served[int(u)] for u in np.asarray(user_ids)[both]])
    per_user_churn, per_user_rbo = churn(new, old), rbo(new, old)
    kept = np.asarray(unchanged, bool)[both]

    def mean(values, mask):
        return round(float(values[mask].mean()), 6) if mask.any() else None

    everyone = np.ones(len(new), bool)
    return Stability(
        int(both.sum()),
        int(kept.sum()),
        mean(per_user_churn, everyone),
        mean(per_user_churn, kept),
        mean(per_user_rbo, everyone),
        mean(per_user_rbo, kept),
    )


def _padded(lists) -> np.ndarray:
    out = np.full((len(lists), DEPTH), -1, np.int64)
    for i, movies in enumerate(lists):
        movies = np.asarray(movies, np.int64)[:DEPTH]
        out[i, : len(movies)] = movies
    return out


def unchanged_users(user_ids: np.ndarray, ratings: dict, served_ratings: dict) -> np.ndarray:
    """Per user of `user_ids`: the same number of ratings and the same newest rating time in
    both rating sets (no rating added, removed or redone since the served run's data)."""

    def summary(r):
        users, inverse = np.unique(np.asarray(r["user_id"]), return_inverse=True)
        newest = np.full(len(users), -1, np.int64)
        np.maximum.at(newest, inverse, np.asarray(r["rated_at"], np.int64))
        return users, np.bincount(inverse, minlength=len(users)), newest

    now_users, now_counts, now_newest = summary(ratings)
    old_users, old_counts, old_newest = summary(served_ratings)
    user_ids = np.asarray(user_ids, np.int64)
    out = np.zeros(len(user_ids), bool)
    at_now = np.searchsorted(now_users, user_ids)
    at_old = np.searchsorted(old_users, user_ids)
    ok = (at_now < len(now_users)) & (at_old < len(old_users))
    ok[ok] &= (now_users[at_now[ok]] == user_ids[ok]) & (old_users[at_old[ok]] == user_ids[ok])
    out[ok] = (now_counts[at_now[ok]] == old_counts[at_old[ok]]) & (now_newest[at_now[ok]] == old_newest[at_old[ok]])
    return out
