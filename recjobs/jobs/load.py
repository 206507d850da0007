"""load: check the input folder, save it under artifacts/<run_id>/ and start the run record.

Nothing is written until every file has passed its checks. The catalog (movies, ratings,
tags) reaches the tables readers see only when the run is published (recjobs.storage.publish).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..method import rules
from ..settings import Settings
from ..storage import artifacts, db, runs
from ..storage.movielens import read_catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    run_id: str
    ratings_path: str
    n_ratings: int
    n_users: int
    n_movies: int
    n_incoming_files: int
    n_dropped_ratings: int
    data_sha256: str
    seconds: float


def load(settings: Settings, run_id: str) -> LoadResult:
    """Check movies.csv, ratings.csv and the optional links.csv, tags.csv, incoming/*.csv in --data-dir, save
    them under artifacts/<run_id>/ and start the run record; bad input writes nothing."""
    started = time.perf_counter()
    rules.read(settings.rules)  # a bad rules file fails the night here, not after the fit
    directory = artifacts.run_dir(settings.artifacts, run_id)
    log.info("load %s: reading %s", run_id, settings.data_dir)
    catalog = read_catalog(settings.data_dir, settings.positive_threshold)
    directory.mkdir(parents=True, exist_ok=True)
    artifacts.save_catalog(directory, catalog)
    ratings = catalog.ratings
    seconds = time.perf_counter() - started
    with db.transaction(settings.db) as conn:
        db.check_integrity(conn, settings.db)  # a damaged file is found before a night of work
        runs.clear_abandoned(conn, settings, run_id)
        runs.start(conn, run_id, settings, directory, catalog.data_sha256)
        runs.update(conn, run_id, n_ratings=len(ratings), n_dropped_ratings=catalog.n_dropped_ratings)
        runs.record_seconds(conn, run_id, "load", seconds)
        runs.upsert_metrics(conn, run_id, [("data_until", "all", float(ratings["rated_at"].max()))])
    result = LoadResult(
        run_id=run_id,
        ratings_path=str(directory / artifacts.RATINGS),
        n_ratings=len(ratings),
        n_users=int(ratings["user_id"].nunique()),
        n_movies=len(catalog.movies),
        n_incoming_files=catalog.n_incoming_files,
        n_dropped_ratings=catalog.n_dropped_ratings,
        data_sha256=catalog.data_sha256,
        seconds=round(seconds, 3),
    )
    log.info(
        "load %s: %d ratings, %d users, %d movies, %d dropped in %.1fs",
        run_id,
        result.n_ratings,
        result.n_users,
        result.n_movies,
        result.n_dropped_ratings,
        seconds,
    )
    return result
