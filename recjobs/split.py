"""split: the time-based leave-last-out split.

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

import logging
import time
from dataclasses import dataclass

import numpy as np

from . import db, runs
from .errors import DataError
from .settings import Settings

log = logging.getLogger(__name__)

TRAIN, VAL, BETWEEN, TEST, AFTER = range(5)


@dataclass(frozen=True)
class SplitResult:
    run_id: str
    split_path: str
    n_train_positives: int
    n_validation: int
    n_test: int
    n_users_evaluated: int
    n_users_not_evaluated: int
    seconds: float


def assign_parts(user_id: np.ndarray, rated_at: np.ndarray, movie_id: np.ndarray,
                 positive: np.ndarray) -> np.ndarray:
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


def split(settings: Settings, run_id: str) -> SplitResult:
    started = time.perf_counter()
    directory = runs.run_dir(settings, run_id)
    data = np.load(runs.require_file(directory / "ratings.npz", "load"))
    positive = data["rating"] >= settings.positive_threshold
    parts = assign_parts(data["user_id"], data["rated_at"], data["movie_id"], positive)
    n_test = int((parts == TEST).sum())
    if n_test == 0:
        raise DataError(f"ratings: no user has 2 ratings >= {settings.positive_threshold}; "
                        "expected at least one user to evaluate the model on")
    split_path = directory / "split.npz"
    runs.write_atomically(split_path, lambda temp: np.savez(temp, part=parts))
    n_users = len(np.unique(data["user_id"]))
    result = SplitResult(
        run_id=run_id,
        split_path=str(split_path),
        n_train_positives=int(((parts == TRAIN) & positive).sum()),
        n_validation=int((parts == VAL).sum()),
        n_test=n_test,
        n_users_evaluated=n_test,
        n_users_not_evaluated=n_users - n_test,
        seconds=round(time.perf_counter() - started, 3),
    )
    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_train=result.n_train_positives, n_test_users=n_test)
    runs.record_seconds(settings, run_id, "split", result.seconds)
    log.info("split %s: %d train positives, %d validation, %d test users, %d users not evaluated in %.2fs",
             run_id, result.n_train_positives, result.n_validation, n_test, result.n_users_not_evaluated,
             result.seconds)
    return result
