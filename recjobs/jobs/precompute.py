"""precompute: top-k movies for every user of the published model (the score_shard files,
scoring here any shard without one) and the most similar movies for every movie, and the
run's cold-start bundle; then, if the run passes the quality gate, publish it.

The rows, the catalog and the pointer flip are one transaction (recjobs.storage.publish).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StateError
from ..evaluation import stability
from ..method import bundle, model, rules, shards
from ..settings import Settings
from ..storage import artifacts, db, publish, runs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecomputeResult:
    run_id: str
    status: str  # 'published' or 'rejected'
    reason: str
    n_users: int
    n_recommendations: int
    n_similar: int
    pruned_runs: tuple[str, ...]
    db_path: str
    seconds: float
    shards_from_files: int = 0  # score shards whose score_shard file was published (the rest scored here)


def gate(conn, run_id: str, settings: Settings) -> publish.GateDecision:
    """The quality gate on the run and the published run, each with its temporal figures."""
    run = publish.gate_figures(conn, runs.get(conn, run_id))
    return publish.gate(run, publish.gate_figures(conn, publish.current_run(conn)), settings.gate_tolerance)


def measure_stability(
    settings: Settings, run_id: str, ratings: dict, factors, top_ids, top_scores
) -> stability.Stability | None:
    """The run's top 10s against the published run's (None when there is none, or it is this run);
    `ratings`: the run's own (artifacts.read_ratings)."""
    with db.reading(settings.db) as conn:
        current = publish.current_run(conn)
        if current is None or current["run_id"] == run_id:
            return None
        rows = conn.execute(db.query("publish.served_top_lists"), {"run_id": current["run_id"]}).all()
        refreshed = {u for (u,) in conn.execute(db.query("publish.refreshed_users"), {"run_id": current["run_id"]})}
    served: dict[int, list] = {}
    for user, movie in rows:
        served.setdefault(user, []).append(movie)
    head = top_ids[:, : stability.DEPTH]
    kept = (head >= 0) & ~artifacts.is_filtered(top_scores[:, : stability.DEPTH])
    top10 = np.where(kept, factors.movie_ids[np.maximum(head, 0)], -1)
    try:
        served_ratings = artifacts.read_ratings(Path(current["artifacts_dir"] or ""))
    except (OSError, StateError, KeyError, ValueError):
        log.info(
            "stability: the ratings of the published run %s cannot be read; churn over all users only",
            current["run_id"],
        )
        unchanged = np.zeros(len(factors.user_ids), bool)
    else:
        unchanged = stability.unchanged_users(factors.user_ids, ratings, served_ratings)
        unchanged &= ~np.isin(factors.user_ids, list(refreshed))
    found = stability.compare(factors.user_ids, top10, served, unchanged)
    log.info(
        "stability against %s: churn@10 %s over %d users, %s over the %d with no new rating; RBO %s",
        current["run_id"],
        found.churn_at_10,
        found.n_users,
        found.churn_at_10_unchanged,
        found.n_unchanged,
        found.rbo_at_10,
    )
    return found


def precompute(settings: Settings, run_id: str) -> PrecomputeResult:
    """Store the top-k movies for every user (already rated movies excluded) and the most similar
    movies per movie, then publish the run if it passes the quality gate: rows, catalog and
    pointer in one transaction. A rejected run leaves what readers see unchanged."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    with db.reading(settings.db) as conn:
        decision = gate(conn, run_id, settings)
    n_users = n_recs = n_similar = from_files = 0
    if decision.publish:
        exclusions = shards.run_exclusions(settings, directory)
        factors, lists, from_files = shards.all_users(settings, run_id, exclusions)
        top_ids, top_scores = lists.top_items, lists.top_scores
        log.info(
            "precompute %s: %d of %d shards from score_shard files, the rest scored here",
            run_id,
            from_files,
            settings.score_shards,
        )
        ratings = artifacts.read_ratings(directory)
        stable = measure_stability(settings, run_id, ratings, factors, top_ids, top_scores)
        als = model.from_factors(factors.user_factors, factors.item_factors, settings)
        similar_ids, similar_scores = model.similar(als, settings.n_similar, factors.content_rows)
        catalog = artifacts.read_stored_catalog(directory, ratings)
        bundle.ensure_bundle(directory)  # new users are answered from the moment the run is published

    with db.transaction(settings.db) as conn:
        db.check_integrity(conn, settings.db)  # never publish into a damaged file
        if decision.publish:  # the gate again, under the write lock: another run may have been published
            decision = gate(conn, run_id, settings)
            current = publish.gate_figures(conn, publish.current_run(conn))
            run = publish.gate_figures(conn, runs.get(conn, run_id))
            decision = publish.churn_gate(decision, stable, run, current, settings.max_churn)
            if stable is not None:
                runs.upsert_metrics(conn, run_id, stable.metric_rows())
        if decision.publish:
            n_recs, n_similar = publish.store_run_rows(
                conn,
                run_id,
                publish.ranked_rows(run_id, factors.user_ids, factors.movie_ids, top_ids, top_scores, lists.because),
                publish.ranked_rows(run_id, factors.movie_ids, factors.movie_ids, similar_ids, similar_scores),
            )
            written = publish.store_catalog(conn, catalog, run_id)
            log.info(
                "catalog: %s; ratings %d added, %d changed, %d removed",
                "every rating written" if written.rewritten else "only what changed written",
                written.added,
                written.changed,
                written.removed,
            )
            in_force = rules.to_json(exclusions.rules_in_force())
            publish.store_exclusions(conn, run_id, in_force, artifacts.read_hidden(directory))
            publish.flip(conn, run_id)
            n_users = len(factors.user_ids)
        else:
            runs.finish(conn, run_id, "rejected", decision.reason)
        pruned = publish.prune(conn, settings.keep_published)
        seconds = time.perf_counter() - started
        runs.record_seconds(conn, run_id, "precompute", seconds)
    status = "published" if decision.publish else "rejected"
    result = PrecomputeResult(
        run_id,
        status,
        decision.reason,
        n_users,
        n_recs,
        n_similar,
        tuple(pruned),
        str(settings.db),
        round(seconds, 3),
        from_files,
    )
    if decision.publish:
        log.info(
            "precompute %s: published; %d recommendations for %d users, %d similar-movie rows in %.1fs",
            run_id,
            n_recs,
            n_users,
            n_similar,
            result.seconds,
        )
    else:
        log.warning("precompute %s: rejected, %s; the published run is unchanged", run_id, decision.reason)
    return result
