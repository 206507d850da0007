"""evaluate_cold_start: how well the cold-start paths serve users the model has never seen.

A seeded random share of the users with enough positives is taken out of training
entirely. On a full night a model is fitted on everyone else with the run's settings (20% of
the eligible users, at most cold_start_eval_users); on a usual night the night's one fit already
left a smaller draw out (at most 1% of the users; recjobs.evaluation.holdout.NightPlan), and
that fit is scored, with no fit of its own. Each held-out user then gives their first N liked
movies (in time order; N = 1, 3, 5, 10) and we measure Recall@10 / NDCG@10 on their later
positives for:

    als        the pure ALS fold-in of recjobs.jobs.cold_start
    blend      what `recjobs cold-start` serves: the fold-in blended toward popularity
               (weight BLEND_PRIOR / (BLEND_PRIOR + N) up to BLEND_MAX_KNOWN seeds)
    sql        the SQL item-similarity path: similar_movies scores summed over the seeds
    popularity positives per movie among the training users

Recall@10 = hits / min(10, later positives); NDCG@10 with binary relevance. Only the
seeds are filtered from the lists (a new user has told us nothing else). The figures
go to run_metrics (metric cold_start_recall_at_10 / cold_start_ndcg_at_10, segment
'<method>_n<N>') and artifacts/<run_id>/cold_start_metrics.json.

choose_blend_prior sweeps the blend's popularity prior (bundle.BLEND_PRIOR) the same way, on a
second draw of held-out users disjoint from the reported one
(tests/benchmarks/choose_cold_start_prior.py, `make choose-cold-start-prior`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.holdout import (
    COLD_START_LATER_POSITIVES,
    COLD_START_SEEDS,
    COLD_START_SHARE,
    NightPlan,
    eligible_users,
    held_out_users,
)
from ..evaluation.metrics import CUTOFF, recall_ndcg_of_items
from ..method import bundle, model
from ..method.scoring import top_k
from ..settings import Settings
from ..storage import artifacts, db, publish, runs

log = logging.getLogger(__name__)

SEED_COUNTS = COLD_START_SEEDS
MIN_LATER_POSITIVES = COLD_START_LATER_POSITIVES
HOLD_OUT_SHARE = COLD_START_SHARE
METHODS = ("als", "blend", "sql", "popularity")


@dataclass(frozen=True)
class ColdStartEvalResult:
    run_id: str
    metrics_path: str | None
    n_users_held_out: int
    sql_source: str | None  # the SQL file the item-similarity path ran
    recall_at_10: dict  # '<method>_n<N>' -> value
    ndcg_at_10: dict
    seconds: float


def positives_in_time_order(ratings: dict, positive: np.ndarray, users: np.ndarray) -> dict[int, np.ndarray]:
    """user -> their positive movie ids ordered by (rated_at, movie_id)."""
    keep = positive & np.isin(ratings["user_id"], users)
    u, m, t = ratings["user_id"][keep], ratings["movie_id"][keep], ratings["rated_at"][keep]
    order = np.lexsort((m, t, u))
    u, m = u[order], m[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    return {int(u[s]): m[s:e] for s, e in zip(starts, np.r_[starts[1:], len(u)], strict=True)}


def fit_without(ratings: dict, held: np.ndarray, settings: Settings, run_id: str):
    """The run's method fitted on every rating of the users not held out: (ALS model, bundle)."""
    keep = ~np.isin(ratings["user_id"], held)
    user_ids = np.unique(ratings["user_id"][keep])
    movie_ids = np.unique(ratings["movie_id"][keep])
    data = model.interactions(ratings, keep, user_ids, movie_ids, settings)
    fitted = model.fit_method(data, settings)
    popularity = np.asarray(data.positives.sum(axis=0)).ravel()
    matrices = {name: getattr(fitted, name, None) for name, _, _ in bundle.ITEM_PARTS}
    held_out_bundle = bundle.make_bundle(
        run_id,
        movie_ids,
        fitted.als.item_factors,
        popularity,
        settings.model_params(),
        trending=data.trending,
        **matrices,
    )
    return fitted.als, held_out_bundle


def one_fit_bundle(ratings: dict, held: np.ndarray, directory: Path, settings: Settings, run_id: str):
    """A usual night's held-out model: the night's one fit (which never saw the `held` users) and
    its bundle, popularity and trending counted without them: (ALS model, bundle)."""
    fitted, factors = model.Fitted.read(directory, artifacts.EVAL, settings)
    keep = ~np.isin(ratings["user_id"], held)
    popularity, trending = bundle.item_counts(
        ratings, keep, factors.movie_ids, settings.positive_threshold, settings.trend_days
    )
    matrices = {name: getattr(fitted, name, None) for name, _, _ in bundle.ITEM_PARTS}
    held_out_bundle = bundle.make_bundle(
        run_id,
        factors.movie_ids,
        fitted.als.item_factors,
        popularity,
        settings.model_params(),
        trending=trending,
        content_rows=fitted.content_rows,
        **matrices,
    )
    return fitted.als, held_out_bundle


def similarity_sql() -> tuple[str, str]:
    """The item-similarity cold-start query clients call through datasette."""
    return db.sql("cold_start"), "sql/cold_start.sql"


def write_similarity_db(
    path: Path, run_id: str, als, movie_ids: np.ndarray, settings: Settings, content_rows=None
) -> None:
    """A scratch database from sql/schema.sql holding the held-out model's similar_movies, published."""
    similar_ids, similar_scores = model.similar(als, settings.n_similar, content_rows)
    with db.transaction(path) as conn:
        conn.execute(
            db.query("runs.start"),
            {"run_id": run_id, "now": runs.now(), "params_json": "{}", "data_sha256": None, "artifacts_dir": None},
        )
        db.insert_many(
            conn,
            "publish.insert_similar_movie",
            publish.ranked_rows(run_id, movie_ids, movie_ids, similar_ids, similar_scores),
        )
        conn.execute(db.query("publish.point_to"), {"run_id": run_id, "now": runs.now()})


def evaluate_cold_start(settings: Settings, run_id: str) -> ColdStartEvalResult:
    """Write the run's cold-start bundle, then measure cold start on held-out users: Recall@10 and
    NDCG@10 for N = 1, 3, 5, 10 liked movies, for the fold-in, the served blend, SQL item
    similarity and popularity. Part of `run`, after publishing; it gates nothing."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    settings = artifacts.run_settings(settings, directory)  # with the blend train chose or kept
    bundle.ensure_bundle(directory)  # the serving bundle (precompute writes it for a published run)
    ratings = artifacts.read_ratings(directory)
    positive = ratings["rating"] >= settings.positive_threshold
    plan = NightPlan.from_arrays(artifacts.read_plan(directory))
    if plan.full:
        held = held_out_users(ratings["user_id"], positive, settings.random_seed, limit=settings.cold_start_eval_users)
    else:
        held = plan.cold_start_user_ids
    if len(held) == 0:
        log.info(
            "evaluate_cold_start %s: no user has %d positives; nothing to measure",
            run_id,
            max(SEED_COUNTS) + MIN_LATER_POSITIVES,
        )
        return ColdStartEvalResult(run_id, None, 0, None, {}, {}, round(time.perf_counter() - started, 3))
    if plan.full:
        als, held_out_bundle = fit_without(ratings, held, settings, run_id)
    else:
        als, held_out_bundle = one_fit_bundle(ratings, held, directory, settings, run_id)
    protocol = "own fit (full night)" if plan.full else "the night's one fit (usual night)"
    histories = positives_in_time_order(ratings, positive, held)
    statement, sql_source = similarity_sql()

    sums = {f"{m}_n{n}": np.zeros(2) for n in SEED_COUNTS for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="recjobs-cold-eval-") as scratch:
        scratch_db = Path(scratch) / "similar.db"
        write_similarity_db(scratch_db, run_id, als, held_out_bundle.movie_ids, settings, held_out_bundle.content_rows)
        try:
            with db.reading(scratch_db) as conn:
                for history in histories.values():
                    for n in SEED_COUNTS:
                        seeds, targets = history[:n], {int(m) for m in history[n:]}
                        for method, top in ranked_lists(held_out_bundle, seeds, conn, statement).items():
                            sums[f"{method}_n{n}"] += recall_ndcg_of_items(top, targets)
        finally:
            db.engine_for(scratch_db).dispose()

    recall = {key: round(float(total[0] / len(histories)), 6) for key, total in sums.items()}
    ndcg = {key: round(float(total[1] / len(histories)), 6) for key, total in sums.items()}
    metrics_path = artifacts.write_json(
        directory / artifacts.COLD_START_METRICS,
        {
            "n_users_held_out": len(histories),
            "protocol": protocol,
            "sql_source": sql_source,
            "blend_prior": bundle.BLEND_PRIOR,
            "blend_max_known": bundle.BLEND_MAX_KNOWN,
            "recall_at_10": recall,
            "ndcg_at_10": ndcg,
        },
    )
    result = ColdStartEvalResult(
        run_id, str(metrics_path), len(histories), sql_source, recall, ndcg, round(time.perf_counter() - started, 3)
    )
    with db.transaction(settings.db) as conn:
        runs.upsert_metrics(
            conn,
            run_id,
            [
                *(("cold_start_recall_at_10", segment, value) for segment, value in recall.items()),
                *(("cold_start_ndcg_at_10", segment, value) for segment, value in ndcg.items()),
                ("cold_start_users", "all", len(histories)),
            ],
        )
        runs.record_seconds(conn, run_id, "evaluate_cold_start", result.seconds)
    log.info(
        "evaluate_cold_start %s: %d held-out users, %s; Recall@10 N=1/3/5/10 als %s, popularity %s in %.1fs",
        run_id,
        len(histories),
        protocol,
        "/".join(f"{recall[f'als_n{n}']:.3f}" for n in SEED_COUNTS),
        "/".join(f"{recall[f'popularity_n{n}']:.3f}" for n in SEED_COUNTS),
        result.seconds,
    )
    return result


def ranked_lists(held_out: bundle.Bundle, seeds: np.ndarray, conn, statement: str) -> dict[str, list]:
    """Top-10 movie ids of every method for one simulated new user."""
    rows, _ = held_out.rows_of(seeds)
    _, als_scores = bundle.scores_for(held_out, rows, blend_max_known=0)
    _, served_scores = bundle.scores_for(held_out, rows)
    lists = {
        "als": held_out.movie_ids[top_k(als_scores, rows, CUTOFF)],
        "blend": held_out.movie_ids[top_k(served_scores, rows, CUTOFF)],
        "popularity": held_out.movie_ids[top_k(held_out.popularity, rows, CUTOFF)],
    }
    liked = ",".join(str(int(m)) for m in seeds)
    result = conn.exec_driver_sql(statement, {"liked": liked, "k": CUTOFF}).mappings()
    lists["sql"] = [row.get("similar_movie_id", row.get("movie_id")) for row in result]
    return lists


# ---- choosing BLEND_PRIOR on users apart from the reported ones ----------------------------

BLEND_PRIORS = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 80.0)
# The tuning draw is seeded with (random_seed, TUNING_DRAW): a stream of its own, not the
# reported draw's (seeded with random_seed alone), and taken only from users outside that draw.
TUNING_DRAW = 1


@dataclass(frozen=True)
class BlendPriorChoice:
    chosen_prior: float  # best mean Recall@10 over SEED_COUNTS; ties: best mean NDCG@10, then the smaller prior
    reported_users: np.ndarray  # evaluate_cold_start's held-out users, never scored here
    tuning_users: np.ndarray  # the users the priors were scored on
    tuning_seed: tuple[int, int]
    recall_at_10: dict  # prior -> {N: value}
    ndcg_at_10: dict
    mean_recall_at_10: dict  # prior -> mean over SEED_COUNTS
    mean_ndcg_at_10: dict
    seconds: float


def tuning_users(
    user_id: np.ndarray, positive: np.ndarray, seed: int, share: float = HOLD_OUT_SHARE, limit: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(the reported draw, a tuning draw): the reported draw is held_out_users(seed), exactly what
    evaluate_cold_start holds out; the tuning draw is as many users (sorted), drawn with the seed
    (seed, TUNING_DRAW) from the eligible users not in the reported draw."""
    reported = held_out_users(user_id, positive, seed, share=share, limit=limit)
    rest = np.setdiff1d(eligible_users(user_id, positive), reported)
    size = min(len(reported), len(rest))
    tuning = np.sort(np.random.default_rng((seed, TUNING_DRAW)).choice(rest, size=size, replace=False))
    assert not np.isin(tuning, reported).any(), "the tuning draw overlaps the reported one"
    return reported, tuning


def choose_blend_prior(
    settings: Settings, ratings: dict, priors=BLEND_PRIORS, run_id: str = "choose-blend-prior"
) -> BlendPriorChoice:
    """Recall@10 and NDCG@10 of the served blend for each popularity prior and N liked movies, on
    a tuning draw of held-out users apart from the reported one; the method is fitted without the
    tuning users (the reported users stay in training, as the tuning users do in the reported fit).
    Same protocol as evaluate_cold_start: the first N liked movies in time order are the seeds."""
    started = time.perf_counter()
    positive = ratings["rating"] >= settings.positive_threshold
    reported, tuning = tuning_users(
        ratings["user_id"], positive, settings.random_seed, limit=settings.cold_start_eval_users
    )
    if len(tuning) == 0:
        raise ValueError("no eligible user outside the reported draw; too few users to choose a prior")
    _, held_out_bundle = fit_without(ratings, tuning, settings, run_id)
    histories = positives_in_time_order(ratings, positive, tuning)

    sums = {(p, n): np.zeros(2) for p in priors for n in SEED_COUNTS}
    for history in histories.values():
        for n in SEED_COUNTS:
            rows, _ = held_out_bundle.rows_of(history[:n])
            targets = {int(m) for m in history[n:]}
            for p in priors:
                _, scores = bundle.scores_for(held_out_bundle, rows, blend_prior=p)
                top = held_out_bundle.movie_ids[top_k(scores, rows, CUTOFF)]
                sums[(p, n)] += recall_ndcg_of_items(top, targets)

    recall = {p: {n: round(float(sums[(p, n)][0] / len(histories)), 6) for n in SEED_COUNTS} for p in priors}
    ndcg = {p: {n: round(float(sums[(p, n)][1] / len(histories)), 6) for n in SEED_COUNTS} for p in priors}
    mean_recall = {p: round(float(np.mean(list(recall[p].values()))), 6) for p in priors}
    mean_ndcg = {p: round(float(np.mean(list(ndcg[p].values()))), 6) for p in priors}
    chosen = min(priors, key=lambda p: (-mean_recall[p], -mean_ndcg[p], p))
    result = BlendPriorChoice(
        float(chosen),
        reported,
        tuning,
        (settings.random_seed, TUNING_DRAW),
        recall,
        ndcg,
        mean_recall,
        mean_ndcg,
        round(time.perf_counter() - started, 3),
    )
    log.info(
        "choose_blend_prior: %d tuning users (apart from %d reported); prior %g, mean Recall@10 %.4f, in %.1fs",
        len(histories),
        len(reported),
        chosen,
        mean_recall[chosen],
        result.seconds,
    )
    return result
