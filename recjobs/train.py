"""train: fit the method (recency-weighted ALS and the two item-item matrices) twice.

- the evaluation model, on every rating each user made before their test item;
- the published model, on all loaded ratings.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import db, model, runs
from .settings import Settings
from .split import TEST

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


def read_inputs(settings: Settings, run_id: str):
    directory = runs.run_dir(settings, run_id)
    ratings = dict(np.load(runs.require_file(directory / "ratings.npz", "load")))
    parts = np.load(runs.require_file(directory / "split.npz", "split"))["part"]
    return ratings, parts


def evaluation_data(ratings: dict, parts: np.ndarray, user_ids, movie_ids, settings: Settings) -> model.Interactions:
    """Every rating each user made before their test item (never the test item or later):
    what the evaluation model is fitted on, and what it filters."""
    return model.interactions(ratings, parts < TEST, user_ids, movie_ids, settings)


def fit_and_save(data: model.Interactions, settings: Settings, user_ids, movie_ids, directory, name: str):
    """Fit the method; save artifacts/<run_id>/model_<name>.npz and its item-item matrices."""
    started = time.perf_counter()
    fitted = model.fit_method(data, settings, show_progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    return fitted.save(directory, name, user_ids, movie_ids), seconds


def train(settings: Settings, run_id: str) -> TrainResult:
    started = time.perf_counter()
    directory = runs.run_dir(settings, run_id)
    ratings, parts = read_inputs(settings, run_id)
    user_ids = np.unique(ratings["user_id"])
    movie_ids = np.unique(ratings["movie_id"])

    eval_data = evaluation_data(ratings, parts, user_ids, movie_ids, settings)
    eval_path, eval_seconds = fit_and_save(eval_data, settings, user_ids, movie_ids, directory, "eval")
    full_data = model.interactions(ratings, np.ones(len(parts), bool), user_ids, movie_ids, settings)
    full_path, full_seconds = fit_and_save(full_data, settings, user_ids, movie_ids, directory, "full")
    params = json.dumps(settings.model_params(), indent=2, sort_keys=True)
    runs.write_atomically(directory / "params.json", lambda temp: temp.write_text(params))

    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_users=len(user_ids), n_items=len(movie_ids))
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
    runs.record_seconds(settings, run_id, "train", result.seconds)
    log.info("train %s: %d users x %d items; eval model %d interactions in %.1fs, "
             "published model %d interactions in %.1fs", run_id, result.n_users, result.n_items,
             result.n_eval_interactions, eval_seconds, result.n_full_interactions, full_seconds)
    return result
