"""train: fit the method (recency-weighted ALS and the two item-item matrices) twice, with
implicit on this machine or in Spark (settings.engine):

- the evaluation model, on every rating each user made before their test item;
- the published model, on all loaded ratings.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import artifacts, db, model, runs, spark_engine
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
    eval_iterations: int  # ALS iterations until converged (at most settings.iterations)
    full_iterations: int
    warm_started: bool  # both fits started from the published run's factors
    seconds: float


def warm_start_factors(settings: Settings, run_id: str, name: str) -> model.Factors | None:
    """The `name` model (factors and ids) of the newest published run recorded before this one,
    to start from; None when warm_start is off, there is none or its file cannot be read."""
    if not settings.warm_start:
        return None
    with db.reading(settings.db) as conn:
        source = conn.execute(db.query("runs.warm_start_source"), {"run_id": run_id}).first()
    if source is None:
        return None
    path = Path(source.artifacts_dir) / artifacts.model_file(name)
    try:
        return model.Factors.read(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("train: no warm start from %s (%s); starting from random factors", path, e)
        return None


def fit_and_save(data: model.Interactions, settings: Settings, run_id: str, user_ids, movie_ids, name: str, spark=None):
    """Fit the method and save it as the run's `name` model: (its path, seconds, FitReport).
    With implicit, from the last published run's `name` factors when there are some; with a
    Spark session, in Spark (spark_engine)."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    if spark is not None:
        fitted = spark_engine.fit_method(spark, data, settings, directory, name)
    else:
        previous = warm_start_factors(settings, run_id, name)
        start = model.start_from(previous, user_ids, movie_ids, settings) if previous is not None else None
        fitted = model.fit_method(data, settings, show_progress=sys.stderr.isatty(), start=start)
    seconds = time.perf_counter() - started
    return fitted.save(directory, name, user_ids, movie_ids), seconds, fitted.fit_report


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
    full_data = model.interactions(ratings, np.ones(len(parts), bool), user_ids, movie_ids, settings)
    for name in (artifacts.EVAL, artifacts.FULL):  # an earlier try's (or another engine's)
        shutil.rmtree(spark_engine.candidates_dir(directory, name), ignore_errors=True)
    with spark_engine.session(settings) if settings.engine == "spark" else contextlib.nullcontext() as spark:
        eval_path, eval_seconds, eval_report = fit_and_save(
            eval_data, settings, run_id, user_ids, movie_ids, artifacts.EVAL, spark
        )
        full_path, full_seconds, full_report = fit_and_save(
            full_data, settings, run_id, user_ids, movie_ids, artifacts.FULL, spark
        )
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
        eval_iterations=eval_report.iterations,
        full_iterations=full_report.iterations,
        warm_started=eval_report.warm and full_report.warm,
        seconds=round(time.perf_counter() - started, 3),
    )
    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_users=len(user_ids), n_items=len(movie_ids))
        runs.record_seconds(conn, run_id, "train", result.seconds)
    log.info(
        "train %s (%s): %d users x %d items (%s); eval model %d interactions, %d ALS iterations, %.1fs; "
        "published model %d interactions, %d ALS iterations, %.1fs",
        run_id,
        settings.engine,
        result.n_users,
        result.n_items,
        "warm start from the published run" if result.warm_started else "random start",
        result.n_eval_interactions,
        result.eval_iterations,
        eval_seconds,
        result.n_full_interactions,
        result.full_iterations,
        full_seconds,
    )
    return result
