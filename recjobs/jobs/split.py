"""split: mark each user's test and validation items (recjobs.evaluation.holdout), plan the night
(full or usual; who is held out of its one fit) and save both."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..evaluation.holdout import TEST, TRAIN, VAL, assign_parts, plan_night
from ..settings import Settings
from ..storage import artifacts, db, runs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitResult:
    run_id: str
    split_path: str
    n_train_positives: int
    n_validation: int
    n_test: int
    n_users_evaluated: int
    n_users_not_evaluated: int
    full_evaluation: bool  # a full night (recjobs.storage.runs.full_night)
    full_evaluation_reason: str
    n_users_held_out: int  # evaluated users, their test item and later out of the one fit
    n_cold_start_held_out: int  # usual nights: simulated new users out of the one fit
    seconds: float


def split(settings: Settings, run_id: str) -> SplitResult:
    """Per user, ordered by (time, movie id): the last positive (rating >= --positive-threshold)
    is the test item, the one before it the validation item; users with fewer than two
    positives are not evaluated. Plans the night: full or usual, and who the one fit holds out."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    ratings = artifacts.read_ratings(directory)
    positive = ratings["rating"] >= settings.positive_threshold
    parts = assign_parts(ratings["user_id"], ratings["rated_at"], ratings["movie_id"], positive)
    n_test = int((parts == TEST).sum())
    if n_test == 0:
        raise DataError(
            f"ratings: no user has 2 ratings >= {settings.positive_threshold}; "
            "expected at least one user to evaluate the model on"
        )
    with db.reading(settings.db) as conn:
        full, reason = runs.full_night(conn, run_id, settings)
    plan = plan_night(ratings, parts, full, reason, settings)
    split_path = artifacts.save_parts(directory, parts, **plan.arrays())
    n_users = len(np.unique(ratings["user_id"]))
    result = SplitResult(
        run_id=run_id,
        split_path=str(split_path),
        n_train_positives=int(((parts == TRAIN) & positive).sum()),
        n_validation=int((parts == VAL).sum()),
        n_test=n_test,
        n_users_evaluated=n_test,
        n_users_not_evaluated=n_users - n_test,
        full_evaluation=full,
        full_evaluation_reason=reason,
        n_users_held_out=len(plan.eval_user_ids),
        n_cold_start_held_out=len(plan.cold_start_user_ids),
        seconds=round(time.perf_counter() - started, 3),
    )
    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_train=result.n_train_positives, n_test_users=n_test)
        runs.record_seconds(conn, run_id, "split", result.seconds)
        runs.upsert_metrics(conn, run_id, [("full_evaluation", "all", float(full))])
    log.info("split %s: %s", run_id, reason)
    log.info(
        "split %s: %d train positives, %d validation, %d test users, %d users not evaluated in %.2fs",
        run_id,
        result.n_train_positives,
        result.n_validation,
        n_test,
        result.n_users_not_evaluated,
        result.seconds,
    )
    return result
