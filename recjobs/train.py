"""train: fit the method (recency-weighted ALS and the two item-item matrices) twice:

- the evaluation model, on every rating each user made before their test item;
- the published model, on all loaded ratings.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import artifacts, db, model, runs
from .holdout import evaluation_data
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    eval_model_path: str
    full_model_path: str
    n_users: int
    n_items: int
    n_eval_interactions: int
    n_full_interactions: int
    eval_fit_seconds: float
    full_fit_seconds: float
    seconds: float


def fit_and_save(data: model.Interactions, settings: Settings, user_ids, movie_ids, directory, name: str):
    """Fit the method and save it as the run's `name` model: (its path, seconds)."""
    started = time.perf_counter()
    fitted = model.fit_method(data, settings, show_progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    return fitted.save(directory, name, user_ids, movie_ids), seconds


def train(settings: Settings, run_id: str) -> TrainResult:
    """Fit implicit ALS (users x items; recency-weighted confidences) and the cosine and sequence
    item-item parts twice with the same settings: on every rating each user made before their
    test item (the evaluation model) and on all ratings (the published model)."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    ratings = artifacts.read_ratings(directory)
    parts = artifacts.read_parts(directory)
    user_ids = np.unique(ratings["user_id"])
    movie_ids = np.unique(ratings["movie_id"])

    eval_data = evaluation_data(ratings, parts, user_ids, movie_ids, settings)
    eval_path, eval_seconds = fit_and_save(eval_data, settings, user_ids, movie_ids, directory, artifacts.EVAL)
    full_data = model.interactions(ratings, np.ones(len(parts), bool), user_ids, movie_ids, settings)
    full_path, full_seconds = fit_and_save(full_data, settings, user_ids, movie_ids, directory, artifacts.FULL)
    artifacts.write_json(directory / artifacts.PARAMS, settings.model_params())

    result = TrainResult(
        run_id=run_id,
        eval_model_path=str(eval_path),
        full_model_path=str(full_path),
        n_users=len(user_ids),
        n_items=len(movie_ids),
        n_eval_interactions=int(eval_data.confidence.nnz),
        n_full_interactions=int(full_data.confidence.nnz),
        eval_fit_seconds=round(eval_seconds, 3),
        full_fit_seconds=round(full_seconds, 3),
        seconds=round(time.perf_counter() - started, 3),
    )
    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_users=len(user_ids), n_items=len(movie_ids))
        runs.record_seconds(conn, run_id, "train", result.seconds)
    log.info(
        "train %s: %d users x %d items; eval model %d interactions in %.1fs, published model %d interactions in %.1fs",
        run_id,
        result.n_users,
        result.n_items,
        result.n_eval_interactions,
        eval_seconds,
        result.n_full_interactions,
        full_seconds,
    )
    return result
