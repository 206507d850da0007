"""train: fit ALS twice with the same settings.

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


def train(settings: Settings, run_id: str) -> TrainResult:
    started = time.perf_counter()
    directory = runs.run_dir(settings, run_id)
    ratings, parts = read_inputs(settings, run_id)
    user_ids = np.unique(ratings["user_id"])
    movie_ids = np.unique(ratings["movie_id"])
    rows = model.index(ratings["user_id"], user_ids)
    cols = model.index(ratings["movie_id"], movie_ids)
    shape = (len(user_ids), len(movie_ids))
    weights = model.confidence(ratings["rating"], settings)
    progress = sys.stderr.isatty()

    before_test = parts < TEST
    eval_matrix = model.matrix(rows[before_test], cols[before_test], weights[before_test], shape)
    t = time.perf_counter()
    eval_model = model.fit(eval_matrix, settings, show_progress=progress)
    eval_seconds = time.perf_counter() - t
    eval_path = directory / "model_eval.npz"
    model.Factors(user_ids, movie_ids, eval_model.user_factors, eval_model.item_factors).save(eval_path)

    full_matrix = model.matrix(rows, cols, weights, shape)
    t = time.perf_counter()
    full_model = model.fit(full_matrix, settings, show_progress=progress)
    full_seconds = time.perf_counter() - t
    full_path = directory / "model_full.npz"
    model.Factors(user_ids, movie_ids, full_model.user_factors, full_model.item_factors).save(full_path)
    (directory / "params.json").write_text(json.dumps(settings.model_params(), indent=2, sort_keys=True))

    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_users=len(user_ids), n_items=len(movie_ids))
    result = TrainResult(
        run_id=run_id,
        eval_model_path=str(eval_path),
        full_model_path=str(full_path),
        n_users=len(user_ids),
        n_items=len(movie_ids),
        n_eval_interactions=int(eval_matrix.nnz),
        n_full_interactions=int(full_matrix.nnz),
        eval_fit_seconds=round(eval_seconds, 3),
        full_fit_seconds=round(full_seconds, 3),
        seconds=round(time.perf_counter() - started, 3),
    )
    runs.record_seconds(settings, run_id, "train", result.seconds)
    log.info("train %s: %d users x %d items; eval model %d interactions in %.1fs, "
             "published model %d interactions in %.1fs", run_id, result.n_users, result.n_items,
             result.n_eval_interactions, eval_seconds, result.n_full_interactions, full_seconds)
    return result
