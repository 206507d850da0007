"""Publishing: everything that writes what readers see. The quality gate, a run's rows, the
catalog published with it, the pointer flip, pruning and rollback.

Readers only ever see rows through `published_run`, so writing a run's rows and flipping
the pointer in one transaction (`publish`) means they see the old complete set or the new
complete set. The database file is never replaced.
"""

from __future__ import annotations

import itertools
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StateError
from ..settings import Settings
from . import artifacts, db, runs
from .artifacts import Catalog, is_filtered

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


def gate_figures(conn, run: dict | None) -> dict | None:
    """A model_runs row with the figures of the temporal protocol added when its train step
    recorded them (run_metrics segment temporal): temporal_recall_at_10 and
    temporal_popularity_recall_at_10."""
    if run is None:
        return None
    rows = conn.execute(db.query("publish.temporal_figures"), {"run_id": run["run_id"]}).all()
    figures = {f"temporal_{metric}": value for metric, value in rows}
    return {**run, **figures}


def gate(run: dict, current: dict | None, tolerance: float) -> GateDecision:
    """Publish only if the run's Recall@10 beats popularity's on the same users and is not more
    than `tolerance` (relative) below the published run's, under the run's gate protocol:
    temporal (the full night's windows, when they held enough users) or leave-last-out. The
    published run is compared on the same protocol; when it has no figure under it (a run whose
    gate was leave-last-out, before a temporal one), only the first rule applies."""
    temporal = run.get("gate_protocol") == "temporal" and run.get("temporal_recall_at_10") is not None
    key = "temporal_recall_at_10" if temporal else "recall_at_10"
    label = "temporal Recall@10" if temporal else "Recall@10"
    recall = run.get(key)
    popularity = run.get("temporal_popularity_recall_at_10" if temporal else "popularity_recall_at_10")
    if run.get("recall_at_10") is None or recall is None:
        return GateDecision(False, "not evaluated; run `recjobs evaluate` first")
    if recall <= popularity:
        return GateDecision(
            False, f"{label} {recall:.4f} does not beat the popularity baseline {popularity:.4f} of the same run"
        )
    compared = ""
    if current and current["run_id"] != run["run_id"]:
        theirs = current.get(key)
        if theirs is not None and recall < theirs * (1 - tolerance):
            return GateDecision(
                False,
                f"{label} {recall:.4f} is more than {tolerance:.0%} below the "
                f"published run {current['run_id']} ({theirs:.4f})",
            )
        if theirs is None:
            compared = f"; the published run {current['run_id']} has no {label} to compare with"
    protocol = "temporal protocol" if temporal else "leave-last-out"
    return GateDecision(True, f"passed the quality gate ({protocol}{compared})")


def churn_gate(decision: GateDecision, stability, run: dict, current: dict | None, max_churn: float) -> GateDecision:
    """Reject a run the quality gate passed when its lists move more than `max_churn` (churn@10
    over the users with no new rating) against the published run's without a quality gain: its
    gate figure (temporal or leave-last-out Recall@10) not above the published run's. 0: off."""
    churned = None if stability is None else stability.churn_at_10_unchanged
    if not decision.publish or max_churn <= 0 or churned is None or churned <= max_churn or current is None:
        return decision
    key = (
        "temporal_recall_at_10"
        if run.get("gate_protocol") == "temporal" and run.get("temporal_recall_at_10") is not None
        else "recall_at_10"
    )
    label = "temporal Recall@10" if key.startswith("temporal") else "Recall@10"
    mine, theirs = run.get(key), current.get(key)
    if mine is not None and theirs is not None and mine > theirs:
        return GateDecision(
            True, f"{decision.reason}; churn@10 {churned:.3f} is above max_churn {max_churn:g}, with a quality gain"
        )
    shown = "none to compare" if theirs is None else f"{theirs:.4f}"
    return GateDecision(
        False,
        f"churn@10 {churned:.3f} of the users with no new rating is above max_churn {max_churn:g} with no quality "
        f"gain ({label} {mine:.4f}; the published run {current['run_id']}: {shown})",
    )


def ranked_rows(run_id: str, owner_ids, movie_ids, top_rows, top_scores, because=None, rows_per_chunk: int = 50_000):
    """(run_id, owner id, rank, movie id, score) per kept entry of top lists (one list per row of
    `top_rows`, movie rows into `movie_ids`), and the reason's movie id (None: no reason) when
    `because` (item rows like top_rows, -1: none) is given; padding (filtered movies) is never
    stored. Made with numpy a chunk of lists at a time, so the Python tuples alive stay few."""
    owner_ids, movie_ids = np.asarray(owner_ids), np.asarray(movie_ids)
    top_rows, top_scores = np.asarray(top_rows), np.asarray(top_scores)
    lists_per_chunk = max(1, rows_per_chunk // max(1, top_rows.shape[1] if top_rows.ndim == 2 else 1))
    for start in range(0, len(top_rows), lists_per_chunk):
        rows, scores = top_rows[start : start + lists_per_chunk], top_scores[start : start + lists_per_chunk]
        keep = (rows >= 0) & ~is_filtered(scores)
        rank = np.cumsum(keep, axis=1)  # 1, 2, ... over the kept entries of each list
        owner, column = np.nonzero(keep)  # list by list, best first
        columns = [
            itertools.repeat(run_id),
            owner_ids[start + owner].tolist(),
            rank[owner, column].tolist(),
            movie_ids[rows[owner, column]].tolist(),
            scores[owner, column].astype(np.float64).tolist(),
        ]
        if because is not None:
            reason = np.asarray(because)[start : start + lists_per_chunk][owner, column]
            columns.append(
                [
                    None if r < 0 else m
                    for r, m in zip(reason.tolist(), movie_ids[np.maximum(reason, 0)].tolist(), strict=True)
                ]
            )
        yield from zip(*columns, strict=False)  # the run id repeats without end


def store_run_rows(conn, run_id: str, recommendations, similar_movies) -> tuple[int, int]:
    """Replace the run's recommendations and similar_movies rows with these ranked_rows."""
    conn.exec_driver_sql(db.sql("publish.delete_run_recommendations"), (run_id,))
    conn.exec_driver_sql(db.sql("publish.delete_run_similar_movies"), (run_id,))
    return (
        db.insert_many(conn, "publish.insert_recommendation", recommendations),
        db.insert_many(conn, "publish.insert_similar_movie", similar_movies),
    )


@dataclass(frozen=True)
class CatalogWrite:
    """What store_catalog did to the ratings table."""

    rewritten: bool  # every row deleted and written again (no usable earlier catalog, or most changed)
    added: int
    changed: int
    removed: int


REWRITE_SHARE = 0.5  # more changed rows than this share of the ratings: rewrite them all


def store_catalog(conn, catalog: Catalog, run_id: str) -> CatalogWrite:
    """Replace movies and tags with the run's catalog, and make the ratings table hold the run's
    ratings: only the rows added, changed or removed since the run it was last written from
    (catalog_source) when that run's ratings file is still there and matches the table."""
    for table in ("tags", "movies"):
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
    written = _store_ratings(conn, {c: np.asarray(catalog.ratings[c]) for c in RATING_COLUMNS})
    conn.execute(db.query("publish.set_catalog_source"), {"run_id": run_id})
    t = catalog.tags
    db.insert_many(
        conn,
        "publish.insert_tag",
        zip(t["user_id"].tolist(), t["movie_id"].tolist(), t["tag"].tolist(), t["tagged_at"].tolist(), strict=True),
    )
    return written


RATING_COLUMNS = ("user_id", "movie_id", "rating", "rated_at")


def _by_key(ratings: dict) -> tuple[np.ndarray, dict]:
    """The ratings in (user_id, movie_id) order, the table's key, and that key as one int64."""
    order = np.lexsort((ratings["movie_id"], ratings["user_id"]))
    ordered = {c: np.asarray(ratings[c])[order] for c in RATING_COLUMNS}
    return (ordered["user_id"].astype(np.int64) << 32) | ordered["movie_id"].astype(np.int64), ordered


def _previous_ratings(conn) -> dict | None:
    """The ratings the table holds, from the files of the run it was written from; None when
    unknown (no source recorded, its file gone or unreadable, or its count differs)."""
    source = conn.execute(db.query("publish.catalog_source")).first()
    if source is None or source.artifacts_dir is None:
        return None
    try:
        previous = artifacts.read_ratings(Path(source.artifacts_dir))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, StateError) as e:
        log.info("catalog: the ratings of %s cannot be read (%s); writing every rating", source.run_id, e)
        return None
    if conn.exec_driver_sql(db.sql("publish.count_ratings")).scalar() != len(previous["user_id"]):
        log.info("catalog: the ratings table no longer matches run %s; writing every rating", source.run_id)
        return None
    return previous


def _store_ratings(conn, ratings: dict) -> CatalogWrite:
    new_key, new = _by_key(ratings)
    previous = _previous_ratings(conn)
    if previous is not None:
        old_key, old = _by_key(previous)
        at = np.minimum(np.searchsorted(old_key, new_key), max(len(old_key) - 1, 0))
        found = (old_key[at] == new_key) if len(old_key) else np.zeros(len(new_key), bool)
        differs = found & (
            (old["rating"][at].astype(np.float32) != new["rating"].astype(np.float32))
            | (old["rated_at"][at] != new["rated_at"])
        )
        gone = ~np.isin(old_key, new_key, assume_unique=True)
        n_changes = int((~found).sum() + differs.sum() + gone.sum())
        if n_changes <= REWRITE_SHARE * len(new_key):
            stale = np.r_[old_key[gone], new_key[differs]]
            stale_keys = zip((stale >> 32).tolist(), (stale & 0xFFFFFFFF).tolist(), strict=True)
            db.insert_many(conn, "publish.delete_rating", stale_keys)
            _insert_ratings(conn, new, ~found | differs)
            return CatalogWrite(False, int((~found).sum()), int(differs.sum()), int(gone.sum()))
    conn.exec_driver_sql(db.sql("publish.delete_ratings"))
    _insert_ratings(conn, new, np.ones(len(new_key), bool))
    return CatalogWrite(True, len(new_key), 0, 0)


RATING_ROWS_PER_CHUNK = 50_000


def _insert_ratings(conn, ordered: dict, rows: np.ndarray) -> None:
    """Insert the chosen rows, in key order (appends to the table's b-tree). Python tuples are
    made a chunk at a time: 25M ratings as Python lists at once took over 3 GB."""
    chosen = np.flatnonzero(rows)

    def tuples():
        for start in range(0, len(chosen), RATING_ROWS_PER_CHUNK):
            at = chosen[start : start + RATING_ROWS_PER_CHUNK]
            columns = [ordered[c][at] for c in RATING_COLUMNS]
            columns[2] = columns[2].astype(np.float64)
            yield from zip(*(c.tolist() for c in columns), strict=True)

    db.insert_many(conn, "publish.insert_rating", tuples())


def _nullable(column) -> list:
    import pandas as pd

    return [
        None if pd.isna(v) else (int(v) if isinstance(v, (float, np.floating, np.integer)) else v)
        for v in column.tolist()
    ]


def store_exclusions(conn, run_id: str, rules_json: str | None, hidden: dict) -> None:
    """Record the rules the run's lists were made under (model_runs.rules_json) and keep the
    hidden movies `load` read (hidden_movies), for reports and the refreshes and cold starts to come."""
    conn.execute(db.query("refresh.set_rules"), {"run_id": run_id, "rules_json": rules_json})
    db.insert_many(
        conn,
        "refresh.insert_hidden",
        zip(hidden["user_id"].tolist(), hidden["movie_id"].tolist(), hidden["hidden_at"].tolist(), strict=True),
    )


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
