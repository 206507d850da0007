"""Publishing: everything that writes what readers see. The quality gate, a run's rows, the
catalog published with it, the pointer flip, pruning and rollback.

Readers only ever see rows through `published_run`, so writing a run's rows and flipping
the pointer in one transaction (`publish`) means they see the old complete set or the new
complete set. The database file is never replaced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import db, runs
from .artifacts import Catalog
from .errors import StateError
from .scoring import is_filtered
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str


@dataclass(frozen=True)
class RollbackResult:
    from_run_id: str | None
    to_run_id: str


def current_run(conn) -> dict | None:
    row = conn.execute(db.query("publish.current")).mappings().first()
    return dict(row) if row else None


def gate(run: dict, current: dict | None, tolerance: float) -> GateDecision:
    """Publish only if Recall@10 beats popularity of the same run and is not more than
    `tolerance` (relative) below the published run's."""
    recall, popularity = run["recall_at_10"], run["popularity_recall_at_10"]
    if recall is None:
        return GateDecision(False, "not evaluated; run `recjobs evaluate` first")
    if recall <= popularity:
        return GateDecision(
            False, f"Recall@10 {recall:.4f} does not beat the popularity baseline {popularity:.4f} of the same run"
        )
    if current and current["run_id"] != run["run_id"] and current["recall_at_10"] is not None:
        floor = current["recall_at_10"] * (1 - tolerance)
        if recall < floor:
            return GateDecision(
                False,
                f"Recall@10 {recall:.4f} is more than {tolerance:.0%} below the "
                f"published run {current['run_id']} ({current['recall_at_10']:.4f})",
            )
    return GateDecision(True, "passed the quality gate")


def ranked_rows(run_id: str, owner_ids, movie_ids, top_rows, top_scores):
    """(run_id, owner id, rank, movie id, score) per kept entry of top lists (one list per row of
    `top_rows`, movie rows into `movie_ids`); padding (filtered movies) is never stored."""
    for owner, (rows, scores) in enumerate(zip(top_rows, top_scores, strict=True)):
        keep = (rows >= 0) & ~is_filtered(scores)
        for rank, (item, score) in enumerate(zip(rows[keep], scores[keep], strict=True), start=1):
            yield run_id, int(owner_ids[owner]), rank, int(movie_ids[item]), float(score)


def store_run_rows(conn, run_id: str, recommendations, similar_movies) -> tuple[int, int]:
    """Replace the run's recommendations and similar_movies rows with these ranked_rows."""
    conn.exec_driver_sql(db.sql("publish.delete_run_recommendations"), (run_id,))
    conn.exec_driver_sql(db.sql("publish.delete_run_similar_movies"), (run_id,))
    return (
        db.insert_many(conn, "publish.insert_recommendation", recommendations),
        db.insert_many(conn, "publish.insert_similar_movie", similar_movies),
    )


def store_catalog(conn, catalog: Catalog) -> None:
    """Replace movies, ratings and tags with the run's catalog."""
    for table in ("tags", "ratings", "movies"):
        conn.exec_driver_sql(db.sql(f"publish.delete_{table}"))
    m = catalog.movies
    db.insert_many(
        conn,
        "publish.insert_movie",
        zip(
            m["movie_id"].tolist(),
            m["title"].tolist(),
            m["genres"].tolist(),
            _nullable(m["year"]),
            _nullable(m["imdb_id"]),
            _nullable(m["tmdb_id"]),
            strict=True,
        ),
    )
    r = catalog.ratings
    db.insert_many(
        conn,
        "publish.insert_rating",
        zip(r["user_id"].tolist(), r["movie_id"].tolist(), r["rating"].tolist(), r["rated_at"].tolist(), strict=True),
    )
    t = catalog.tags
    db.insert_many(
        conn,
        "publish.insert_tag",
        zip(t["user_id"].tolist(), t["movie_id"].tolist(), t["tag"].tolist(), t["tagged_at"].tolist(), strict=True),
    )


def _nullable(column) -> list:
    import pandas as pd

    return [
        None if pd.isna(v) else (int(v) if isinstance(v, (float, np.floating, np.integer)) else v)
        for v in column.tolist()
    ]


def flip(conn, run_id: str) -> None:
    now = runs.now()
    conn.execute(db.query("publish.point_to"), {"run_id": run_id, "now": now})
    conn.execute(db.query("publish.mark_published"), {"run_id": run_id, "now": now})


def prune(conn, keep: int) -> list[str]:
    """Delete the rows of runs that are neither current nor among the newest `keep` published."""
    pruned = [r[0] for r in conn.execute(db.query("publish.runs_to_prune"), {"keep": keep})]
    for run_id in pruned:
        conn.exec_driver_sql(db.sql("publish.delete_run_recommendations"), (run_id,))
        conn.exec_driver_sql(db.sql("publish.delete_run_similar_movies"), (run_id,))
        conn.execute(db.query("publish.mark_rows_deleted"), {"run_id": run_id, "now": runs.now()})
    if pruned:
        log.info("pruned the rows of %d runs: %s", len(pruned), ", ".join(pruned))
    return pruned


def rollback(settings: Settings, to_run_id: str | None = None) -> RollbackResult:
    """Point readers at an earlier published run whose rows are still kept."""
    with db.transaction(settings.db) as conn:
        current = current_run(conn)
        if to_run_id is None:
            to_run_id = conn.execute(db.query("publish.rollback_target")).scalar()
            if to_run_id is None:
                raise StateError(
                    "no earlier published run to roll back to; "
                    f"the last {settings.keep_published} published runs are kept"
                )
        target = runs.get(conn, to_run_id)
        if target["status"] != "published" or target["rows_deleted_at"] is not None:
            raise StateError(
                f"run {to_run_id!r} cannot be served (status {target['status']}"
                f"{', rows deleted' if target['rows_deleted_at'] else ''}); "
                "expected one of the kept published runs (see model_runs)"
            )
        conn.execute(db.query("publish.point_to"), {"run_id": to_run_id, "now": runs.now()})
    log.info("rollback: now serving %s (was %s)", to_run_id, current and current["run_id"])
    return RollbackResult(from_run_id=current and current["run_id"], to_run_id=to_run_id)


def published_run(settings: Settings) -> dict:
    """The model_runs row readers are served, with its number of stored recommendations."""
    with db.read_only(settings.db) as conn:
        run = conn.execute(db.query("publish.current_with_counts")).mappings().first()
    if run is None:
        raise StateError(f"{settings.db}: no published run yet; run `recjobs run` first")
    return dict(run)
