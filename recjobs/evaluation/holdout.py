"""The time-based leave-last-out holdout: which ratings each model sees and is scored on.

Ratings are ordered per user by (rated_at, movie_id). For each user with at least two
positives, the last positive is the test item and the second-to-last the validation
item. Every rating gets a part code:

    TRAIN   before the validation item (any rating; positives are the train positives)
    VAL     the validation item
    BETWEEN after the validation item, before the test item (never a positive)
    TEST    the test item
    AFTER   after the test item (never a positive)

Users with fewer than two positives are all TRAIN: they are not evaluated, but the
published model (fitted on every rating) still recommends to them.
"""

from __future__ import annotations

import numpy as np

from ..method import model
from ..settings import Settings

TRAIN, VAL, BETWEEN, TEST, AFTER = range(5)


def assign_parts(user_id: np.ndarray, rated_at: np.ndarray, movie_id: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Part code per rating (any input order); ties in time are broken by movie_id."""
    order = np.lexsort((movie_id, rated_at, user_id))
    users, pos = user_id[order], positive[order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    # positives at or after each row, within the user
    rev_cum = np.cumsum(pos[::-1])[::-1]
    group_end_cum = np.r_[rev_cum[ends[:-1]], 0] if len(ends) > 1 else np.array([0])
    group = np.repeat(np.arange(len(starts)), ends - starts)
    after = rev_cum - group_end_cum[group]
    n_pos = after[starts][group]
    evaluated = n_pos >= 2
    parts = np.full(len(users), TRAIN, dtype=np.int8)
    is_test = evaluated & (pos == 1) & (after == 1)
    is_val = evaluated & (pos == 1) & (after == 2)
    parts[evaluated & (after == 0)] = AFTER
    parts[evaluated & (pos == 0) & (after == 1)] = BETWEEN
    parts[is_test] = TEST
    parts[is_val] = VAL
    out = np.empty_like(parts)
    out[order] = parts
    return out


def before_test(parts: np.ndarray) -> np.ndarray:
    """Every rating each user made before their test item: what the evaluation model is
    fitted on and filters (never the test item or later)."""
    return parts < TEST


def users_now(ratings: dict, keep: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    """Per user row, the time of their newest rating where `keep` is true: when a nightly run
    could first have answered for their held-out item (the newest of all where a user has none)."""
    times = ratings["rated_at"][keep]
    now = np.full(len(user_ids), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(now, model.index(ratings["user_id"][keep], user_ids), times)
    return np.where(now == np.iinfo(np.int64).min, times.max() if len(times) else 0, now)


def evaluation_data(ratings: dict, parts: np.ndarray, user_ids, movie_ids, settings: Settings) -> model.Interactions:
    """The evaluation model's interactions: the ratings before each user's test item, each
    user's trending part counted back from their newest of those ratings."""
    keep = before_test(parts)
    return model.interactions(ratings, keep, user_ids, movie_ids, settings, now=users_now(ratings, keep, user_ids))
