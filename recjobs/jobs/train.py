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

from ..evaluation.holdout import evaluation_data
from ..method import model, spark_engine
from ..settings import Settings
from ..storage import artifacts, db, runs

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
    eval_part_seconds: dict  # seconds of each part of the evaluation model's fit (als, cosine, sequence)
    full_part_seconds: dict
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


def fit_and_save(
    data: model.Interactions, settings: Settings, run_id: str, user_ids, movie_ids, name: str, spark=None, near=None
):
    """Fit the method and save it as the run's `name` model: (its path, seconds, Fitted).
    With implicit, from the last published run's `name` factors when there are some, else from
    `near` (a Fitted on nearly the same ratings, same ids) when warm_start is on; with a Spark
    session, in Spark (spark_engine)."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    if spark is not None:
        fitted = spark_engine.fit_method(spark, data, settings, directory, name)
    else:
        previous = warm_start_factors(settings, run_id, name)
        start = model.start_from(previous, user_ids, movie_ids, settings) if previous is not None else None
        if start is None and near is not None and settings.warm_start:
            start = (near.als.user_factors.copy(), near.als.item_factors.copy())  # not refit in place
        fitted = model.fit_method(data, settings, show_progress=sys.stderr.isatty(), start=start)
    seconds = time.perf_counter() - started
    return fitted.save(directory, name, user_ids, movie_ids), seconds, fitted


def part_summary(part_seconds: dict) -> str:
    return ", ".join(f"{part} {seconds:.1f}s" for part, seconds in part_seconds.items()) or "parts not timed"


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

    for name in (artifacts.EVAL, artifacts.FULL):  # an earlier try's (or another engine's)
        shutil.rmtree(spark_engine.candidates_dir(directory, name), ignore_errors=True)
    with spark_engine.session(settings) if settings.engine == "spark" else contextlib.nullcontext() as spark:
        # one set of matrices at a time: at 25M ratings each set is over 1 GB
        eval_data = evaluation_data(ratings, parts, user_ids, movie_ids, settings)
        n_eval_interactions = int(eval_data.confidence.nnz)
        eval_path, eval_seconds, eval_fitted = fit_and_save(
            eval_data, settings, run_id, user_ids, movie_ids, artifacts.EVAL, spark
        )
        del eval_data
        full_data = model.interactions(ratings, np.ones(len(parts), bool), user_ids, movie_ids, settings)
        n_full_interactions = int(full_data.confidence.nnz)
        # with no published run to start from, the published model starts from the evaluation
        # model: the same users and movies, all but each user's last two positives
        full_path, full_seconds, full_fitted = fit_and_save(
            full_data, settings, run_id, user_ids, movie_ids, artifacts.FULL, spark, near=eval_fitted
        )
        del full_data
    eval_report, full_report = eval_fitted.fit_report, full_fitted.fit_report
    artifacts.write_json(directory / artifacts.PARAMS, settings.model_params())

    result = TrainResult(
        run_id=run_id,
        eval_model_path=str(eval_path),
        full_model_path=str(full_path),
        n_users=len(user_ids),
        n_items=len(movie_ids),
        n_eval_interactions=n_eval_interactions,
        n_full_interactions=n_full_interactions,
        eval_fit_seconds=round(eval_seconds, 3),
        full_fit_seconds=round(full_seconds, 3),
        eval_iterations=eval_report.iterations,
        full_iterations=full_report.iterations,
        warm_started=eval_report.warm and full_report.warm,
        eval_part_seconds=dict(eval_report.part_seconds),
        full_part_seconds=dict(full_report.part_seconds),
        seconds=round(time.perf_counter() - started, 3),
    )
    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_users=len(user_ids), n_items=len(movie_ids))
        runs.record_seconds(conn, run_id, "train", result.seconds)
    log.info(
        "train %s (%s): %d users x %d items (%s); eval model %d interactions, %d ALS iterations, %.1fs (%s); "
        "published model %d interactions, %d ALS iterations, %.1fs (%s)",
        run_id,
        settings.engine,
        result.n_users,
        result.n_items,
        "warm start from the published run" if result.warm_started else "random start",
        result.n_eval_interactions,
        result.eval_iterations,
        eval_seconds,
        part_summary(result.eval_part_seconds),
        result.n_full_interactions,
        result.full_iterations,
        full_seconds,
        part_summary(result.full_part_seconds),
    )
    return result
