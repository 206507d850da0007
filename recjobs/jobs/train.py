"""train: fit the method (recency-weighted ALS and the two item-item matrices) once a night, with
implicit on this machine or in Spark (settings.engine), on every rating but the held-out ones
(recjobs.evaluation.holdout.NightPlan: the evaluated users' test items and later ratings, and
every night a small cold-start draw). Two models come from that one fit:

- eval: the fit itself, which evaluate and evaluate_cold_start score;
- full: the fit with every held-out user's ALS factors re-solved from their whole history
  (model.fold_in), and the same item-item parts; what is scored and published.

Then the night's blend weights: a full night chooses them on its latest windows
(recjobs.evaluation.blend_choice), a usual night keeps the published run's. They go in the run's
params.json, which every later step scores with (artifacts.run_settings).
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

from ..errors import RecJobsError
from ..evaluation import blend_choice
from ..evaluation.holdout import NightPlan, one_fit_keep
from ..method import content, model, spark_engine
from ..settings import Settings
from ..storage import artifacts, db, runs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    eval_model_path: str  # the night's one fit, as the evaluation scores it
    full_model_path: str  # the same fit, the held-out users folded back in: what is published
    n_users: int
    n_items: int
    n_fit_interactions: int  # user-movie pairs in the one fit
    n_folded_users: int  # users whose ALS factors were re-solved from their whole history
    fit_seconds: float
    fold_in_seconds: float
    iterations: int  # ALS iterations until converged (at most settings.iterations)
    warm_started: bool  # the fit started from the published run's factors
    n_restarted_users: int  # evaluated users whose factors started from random (a new test item)
    n_content_movies: int  # movies scored from their content (fewer ratings than min_ratings_to_score)
    n_unrated_movies: int  # of them, catalogue movies with no rating at all
    part_seconds: dict  # seconds of each part of the fit (als, cosine, sequence)
    blend: dict  # the blend weights the run scores with, and where they come from
    blend_seconds: float
    seconds: float


@dataclass(frozen=True)
class WarmStart:
    factors: model.Factors  # the published run's one fit (its eval model)
    plan: NightPlan | None  # who that fit held out; None when its plan cannot be read


def warm_start(settings: Settings, run_id: str) -> WarmStart | None:
    """The one fit and plan of the newest published run recorded before this one, to start from;
    None when warm_start is off, there is none or its model file cannot be read."""
    if not settings.warm_start:
        return None
    with db.reading(settings.db) as conn:
        source = conn.execute(db.query("runs.warm_start_source"), {"run_id": run_id}).first()
    if source is None:
        return None
    directory = Path(source.artifacts_dir)
    path = directory / artifacts.model_file(artifacts.EVAL)
    try:
        factors = model.Factors.read(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("train: no warm start from %s (%s); starting from random factors", path, e)
        return None
    try:
        plan = NightPlan.from_arrays(artifacts.read_plan(directory))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, RecJobsError):
        plan = None
    return WarmStart(factors, plan)


def fit_once(
    data: model.Interactions, settings: Settings, run_id: str, user_ids, movie_ids, plan: NightPlan, catalog, spark=None
):
    """The night's one fit, saved as the run's eval model: (Fitted, seconds, evaluated users
    started afresh, content.ContentScored). With implicit, from the last published run's one fit
    when warm_start is on; an evaluated user keeps their factors only when that fit held out the
    same test item, the others start from random so nothing of their test item carries over.
    With a Spark session, in Spark. Then the movies rated fewer than min_ratings_to_score times
    in the fit get factors predicted from their content (catalog: the run's movies and tags)."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    restarted = len(plan.eval_user_ids)
    if spark is not None:
        fitted = spark_engine.fit_method(spark, data, settings, directory, artifacts.EVAL)
    else:
        previous = warm_start(settings, run_id)
        start = model.start_from(previous.factors, user_ids, movie_ids, settings) if previous is not None else None
        if start is not None:
            kept = plan.same_test_item(previous.plan) if previous.plan is not None else np.zeros(restarted, bool)
            fresh = plan.eval_user_ids[~kept]
            start[0][model.index(fresh, user_ids)] = model.random_start(len(fresh), settings)
            restarted = len(fresh)
        fitted = model.fit_method(data, settings, show_progress=sys.stderr.isatty(), start=start)
    fitted, thin = content.score_thin_movies(fitted, data.seen, *catalog, movie_ids, settings.min_ratings_to_score)
    fitted.save(directory, artifacts.EVAL, user_ids, movie_ids)
    return fitted, time.perf_counter() - started, restarted, thin


def fold_in_held_out(
    fitted: model.Fitted, ratings: dict, plan: NightPlan, user_ids, movie_ids, settings: Settings, run_id: str
) -> model.Fitted:
    """The published model: the one fit with the held-out users' ALS factors re-solved from their
    whole history, saved as the run's full model (the item-item files linked, not rewritten)."""
    directory = artifacts.run_dir(settings.artifacts, run_id)
    folded_ids = plan.folded_user_ids
    rows = model.index(folded_ids, user_ids)
    whole_history = np.isin(ratings["user_id"], folded_ids)  # only their rows are built
    confidence = model.interactions(ratings, whole_history, user_ids, movie_ids, settings).confidence
    published = model.fold_in(fitted, rows, confidence, settings)
    published.factors(user_ids, movie_ids).save(directory / artifacts.model_file(artifacts.FULL))
    for file in (artifacts.similarity_file, artifacts.sequence_file):
        artifacts.link_or_copy(directory / file(artifacts.EVAL), directory / file(artifacts.FULL))
    spark_engine.fold_candidates(directory, rows, published.als, settings)
    return published


def night_blend(settings: Settings, run_id: str, ratings: dict, plan: NightPlan) -> blend_choice.BlendChoice:
    """A full night chooses its blend on the windows before its newest rating (falling back to
    the published run's choice, or the configured weights); a usual night keeps the published
    run's choice when its configured settings are these."""
    with db.reading(settings.db) as conn:
        previous = runs.previous_blend(conn, run_id, settings)
    if plan.full:
        now = int(ratings["rated_at"].max()) + 1
        return blend_choice.choose(ratings, now, settings, previous[1] if previous else None)
    if previous is None or not settings.choose_blend:
        why = "blend choice off (choose_blend)" if not settings.choose_blend else "a usual night, no published choice"
        return blend_choice.fallback(settings, None, 0, why)
    source_run, record = previous
    return blend_choice.BlendChoice(
        {name: float(record[name]) for name in blend_choice.CHOSEN},
        "previous",
        blend_choice.LEAVE_LAST_OUT,
        0,
        f"a usual night: the blend of the published run {source_run} ({record.get('source', 'chosen')} there)",
    )


def part_summary(part_seconds: dict) -> str:
    return ", ".join(f"{part} {seconds:.1f}s" for part, seconds in part_seconds.items()) or "parts not timed"


def train(settings: Settings, run_id: str) -> TrainResult:
    """Fit implicit ALS (users x items; recency-weighted confidences) and the cosine and sequence
    item-item parts once, on every rating but the night's held-out ones (the evaluation model),
    then re-solve the held-out users' ALS factors from their whole history (the published model)."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    ratings = artifacts.read_ratings(directory)
    parts = artifacts.read_parts(directory)
    plan = NightPlan.from_arrays(artifacts.read_plan(directory))
    user_ids = np.unique(ratings["user_id"])
    movies, tags = artifacts.read_movies_and_tags(directory)
    movie_ids = content.catalogue_movie_ids(np.unique(ratings["movie_id"]), movies, settings.min_ratings_to_score)

    for name in (artifacts.EVAL, artifacts.FULL):  # an earlier try's (or another engine's)
        shutil.rmtree(spark_engine.candidates_dir(directory, name), ignore_errors=True)
    with spark_engine.session(settings) if settings.engine == "spark" else contextlib.nullcontext() as spark:
        data = model.interactions(ratings, one_fit_keep(ratings, parts, plan), user_ids, movie_ids, settings)
        n_fit_interactions = int(data.confidence.nnz)
        fitted, fit_seconds, n_restarted, thin = fit_once(
            data, settings, run_id, user_ids, movie_ids, plan, (movies, tags), spark
        )
    del data
    fold_started = time.perf_counter()
    fold_in_held_out(fitted, ratings, plan, user_ids, movie_ids, settings, run_id)
    fold_in_seconds = time.perf_counter() - fold_started
    report = fitted.fit_report
    blend_started = time.perf_counter()
    choice = night_blend(settings, run_id, ratings, plan)
    blend_seconds = time.perf_counter() - blend_started
    scoring_settings = blend_choice.with_weights(settings, choice.weights)
    artifacts.write_json(directory / artifacts.PARAMS, {**scoring_settings.model_params(), "blend": choice.record()})

    result = TrainResult(
        run_id=run_id,
        eval_model_path=str(directory / artifacts.model_file(artifacts.EVAL)),
        full_model_path=str(directory / artifacts.model_file(artifacts.FULL)),
        n_users=len(user_ids),
        n_items=len(movie_ids),
        n_fit_interactions=n_fit_interactions,
        n_folded_users=len(plan.folded_user_ids),
        fit_seconds=round(fit_seconds, 3),
        fold_in_seconds=round(fold_in_seconds, 3),
        iterations=report.iterations,
        warm_started=report.warm,
        n_restarted_users=n_restarted,
        n_content_movies=thin.n_movies,
        n_unrated_movies=thin.n_unrated,
        part_seconds=dict(report.part_seconds),
        blend=choice.record(),
        blend_seconds=round(blend_seconds, 3),
        seconds=round(time.perf_counter() - started, 3),
    )
    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, n_users=len(user_ids), n_items=len(movie_ids))
        runs.record_blend(conn, run_id, choice.record(), choice.protocol)
        runs.upsert_metrics(conn, run_id, choice.metric_rows())
        runs.record_seconds(conn, run_id, "train", result.seconds)
    log.info(
        "train %s (%s): %d users x %d items (%s); one fit on %d interactions, %d ALS iterations, %.1fs (%s); "
        "%d held-out users folded back in, %.1fs; %d movies scored from content (%d unrated)",
        run_id,
        settings.engine,
        result.n_users,
        result.n_items,
        f"warm start from the published run, {n_restarted} evaluated users afresh"
        if result.warm_started
        else "random start",
        result.n_fit_interactions,
        result.iterations,
        fit_seconds,
        part_summary(result.part_seconds),
        result.n_folded_users,
        fold_in_seconds,
        thin.n_movies,
        thin.n_unrated,
    )
    log.info(
        "train %s: blend trend_weight %g, trend_days %g, blend_weight %g, sequence_weight %g (%s: %s; gate: %s) "
        "in %.1fs",
        run_id,
        *(choice.weights[name] for name in blend_choice.CHOSEN),
        choice.source,
        choice.reason,
        choice.protocol,
        blend_seconds,
    )
    return result
