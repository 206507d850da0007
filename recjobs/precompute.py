"""precompute: top-k movies for every user of the published model and the most similar
movies for every movie; then, if the run passes the quality gate, publish it.

The rows and the pointer flip are one transaction.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from . import db, model, publish, runs
from .load import read_stored_catalog, store_catalog
from .settings import Settings
from .train import read_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecomputeResult:
    run_id: str
    status: str            # 'published' or 'rejected'
    reason: str
    n_users: int
    n_recommendations: int
    n_similar: int
    pruned_runs: tuple[str, ...]
    db_path: str
    seconds: float


# implicit pads a list with filtered (already rated) items scored about -3.4e38
# when a user has fewer than k unrated movies; those are never stored.
FILTERED_SCORE = -1e30


def recommendation_rows(run_id: str, user_ids, movie_ids, top_ids, top_scores):
    for u, (ids, scores) in enumerate(zip(top_ids, top_scores)):
        user = int(user_ids[u])
        keep = (ids >= 0) & (scores > FILTERED_SCORE)
        for rank, (item, score) in enumerate(zip(ids[keep], scores[keep]), start=1):
            yield run_id, user, rank, int(movie_ids[item]), float(score)


def precompute(settings: Settings, run_id: str) -> PrecomputeResult:
    started = time.perf_counter()
    directory = runs.run_dir(settings, run_id)
    factors = model.Factors.read(runs.require_file(directory / "model_full.npz", "train"))
    with db.reading(settings.db) as conn:
        decision = publish.gate(runs.get(conn, run_id), publish.current_run(conn), settings.gate_tolerance)
    if not decision.publish:
        with db.transaction(settings.db) as conn:
            runs.finish(conn, run_id, "rejected", decision.reason)
            pruned = publish.prune(conn, settings.keep_published)
        log.warning("precompute %s: rejected, %s; the published run is unchanged", run_id, decision.reason)
        return PrecomputeResult(run_id, "rejected", decision.reason, 0, 0, 0, tuple(pruned),
                                str(settings.db), round(time.perf_counter() - started, 3))

    ratings, _ = read_inputs(settings, run_id)
    everything = model.interactions(ratings, np.ones(len(ratings["rating"]), bool),
                                    factors.user_ids, factors.movie_ids, settings)
    als = model.from_factors(factors.user_factors, factors.item_factors, settings)
    all_users = np.arange(len(factors.user_ids))
    # the evaluated method: ALS blended with item-item scores
    fitted = model.Fitted.read(directory, "full", settings)
    top_ids, top_scores = model.recommend_for(fitted, all_users, everything, settings.k, settings)
    similar_ids, similar_scores = model.similar(als, settings.n_similar)

    with db.transaction(settings.db) as conn:
        # the gate again, under the write lock: another run may have been published meanwhile
        decision = publish.gate(runs.get(conn, run_id), publish.current_run(conn), settings.gate_tolerance)
        if not decision.publish:
            runs.finish(conn, run_id, "rejected", decision.reason)
            n_recs = n_similar = 0
        else:
            conn.exec_driver_sql(db.sql("publish.delete_run_recommendations"), (run_id,))
            conn.exec_driver_sql(db.sql("publish.delete_run_similar_movies"), (run_id,))
            n_recs = db.insert_many(conn, "publish.insert_recommendation", recommendation_rows(
                run_id, factors.user_ids, factors.movie_ids, top_ids, top_scores))
            n_similar = db.insert_many(conn, "publish.insert_similar_movie", recommendation_rows(
                run_id, factors.movie_ids, factors.movie_ids, similar_ids, similar_scores))
            store_catalog(conn, read_stored_catalog(directory))
            publish.flip(conn, run_id)
        pruned = publish.prune(conn, settings.keep_published)
    status = "published" if decision.publish else "rejected"
    result = PrecomputeResult(run_id, status, decision.reason, len(all_users), n_recs, n_similar,
                              tuple(pruned), str(settings.db), round(time.perf_counter() - started, 3))
    runs.record_seconds(settings, run_id, "precompute", result.seconds)
    log.info("precompute %s: %s; %d recommendations for %d users, %d similar-movie rows in %.1fs",
             run_id, status, n_recs, len(all_users), n_similar, result.seconds)
    return result
