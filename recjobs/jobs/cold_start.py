"""cold_start: recommendations for a new user who names a few liked movies, without retraining.

The answer comes from the published run's cold-start bundle (recjobs.method.bundle: the fold-in,
the run's own method, the blend toward popularity). `answer` is the part the server's
cold-start route shares (it stores nothing); `cold_start`, the job, also stores the request
and the answer in cold_start_requests / cold_start_recommendations.

Kept light on purpose: numpy, the standard library's sqlite3 and the bundle only, never
SQLAlchemy, pandas, scipy, implicit, Airflow or the training steps (a test checks it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, StateError
from ..method import rules
from ..method.bundle import read_bundle
from ..method.new_users import new_user_top
from ..settings import Settings
from ..storage import db
from ..storage.artifacts import served_run_dir
from ..storage.db import MAX_ID

log = logging.getLogger(__name__)

MAX_LIKED = 100
MAX_K = 100
LIKED_EXAMPLE = "e.g. --liked 296,318,593"


@dataclass(frozen=True)
class Recommendation:
    """One recommended movie, named as in the cold_start canned query."""

    movie_id: int
    title: str | None
    genres: str | None
    year: int | None
    score: float
    because_movie_id: int | None = None  # the liked movie contributing most (recjobs.method.reasons)
    because_title: str | None = None


@dataclass(frozen=True)
class ColdStartAnswer:
    """The published run's answer to a new user, before anything is stored."""

    run_id: str
    method: str  # 'als_fold_in', 'blend' or 'popularity'
    liked: tuple[int, ...]  # as given, duplicates collapsed
    unknown_ids: tuple[int, ...]  # liked ids the served model does not know
    k: int
    recommendations: tuple[Recommendation, ...]  # best first


@dataclass(frozen=True)
class ColdStartResult(ColdStartAnswer):
    """The job's result: the answer, the stored request's id and the time it took."""

    request_id: int
    seconds: float


class NothingPublished(StateError):
    """The database has no published run to answer from."""


def _one_id(value, example: str) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise ConfigError(f"liked: {value!r} is not an integer movie id; expected integers, {example}")
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            raise ConfigError(f"liked: empty entry in the list; expected comma-separated integers, {example}")
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            shown = repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text)} characters)"
            raise ConfigError(f"liked: {shown} is not an integer movie id; expected integers, {example}")
        if len(text) > 100:  # int() of thousands of digits fails
            raise ConfigError(f"liked: a {len(text)}-digit number is not a valid movie id; expected 1 to {MAX_ID}")
        value = int(text)
    if not isinstance(value, (int, np.integer)):
        raise ConfigError(f"liked: {value!r} is not an integer movie id; expected integers, {example}")
    value = int(value)
    if not 1 <= value <= MAX_ID:
        raise ConfigError(f"liked: {value} is not a valid movie id; expected 1 to {MAX_ID}")
    return value


def parse_liked(value, example: str = LIKED_EXAMPLE) -> tuple[int, ...]:
    """Liked movie ids from '296,318,593' or a list of ints / digit strings; duplicates collapse
    (first occurrence kept). Raises ConfigError for anything else; `example` ends its messages."""
    if value is None:
        raise ConfigError(f"liked: no movie ids given; expected 1 to {MAX_LIKED} ids, {example}")
    items = value.split(",") if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        raise ConfigError(f"liked: {value!r} is not a list of movie ids; {example}") from None
    if isinstance(value, str) and value.strip() == "" or not items:
        raise ConfigError(f"liked: no movie ids given; expected 1 to {MAX_LIKED} ids, {example}")
    liked = tuple(dict.fromkeys(_one_id(item, example) for item in items))
    if len(liked) > MAX_LIKED:
        raise ConfigError(f"liked: {len(liked)} distinct movie ids given; at most {MAX_LIKED} are accepted")
    return liked


def check_k(value) -> int:
    """k as an int from 1 to MAX_K; digit strings are accepted (the CLI passes text)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_K:
        raise ConfigError(f"k: {value!r} is out of range; expected an integer from 1 to {MAX_K}")
    return int(value)


def check_user_id(value) -> int | None:
    """An optional asking user's id (digits or int) from 1 to MAX_ID; None when not given."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= MAX_ID:
        raise ConfigError(f"user_id: {str(value)[:40]!r} is not a user id; expected a whole number from 1 to {MAX_ID}")
    return int(text)


_blocked_cache: dict = {}


def blocked_ids(conn: sqlite3.Connection, run_id: str, rules_json: str | None, now: float) -> np.ndarray:
    """The movie ids the served run's rules in force block now; computed once per run and rules
    until an availability window opens or closes."""
    in_force = rules.from_json(rules_json)
    if not in_force:
        return np.empty(0, np.int64)
    key = (run_id, rules_json)
    cached = _blocked_cache.get(key)
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[2]
    catalogue = conn.execute(db.sql("cold_start_job.catalogue")).fetchall()
    ids = rules.blocked(in_force, [m[0] for m in catalogue], [m[1] for m in catalogue], [m[2] for m in catalogue], now)
    _blocked_cache.clear()
    _blocked_cache[key] = (now, rules.next_change(in_force, now), ids)
    return ids


def answer(
    conn: sqlite3.Connection,
    artifacts_root: Path,
    liked: tuple[int, ...],
    k: int,
    where: str,
    user_id: int | None = None,
) -> ColdStartAnswer:
    """The published run's answer for checked liked ids and k, read inside one snapshot of conn
    (db.snapshot): the run, its bundle, its rules in force and the titles all belong to one run.
    The movies the rules block, and those `user_id` hid, are left out. Writes nothing to the
    database. `where` names the database in errors."""
    served = conn.execute(db.sql("cold_start_job.served_run")).fetchone()
    if served is None:
        raise NothingPublished(f"{where}: no published run to answer from; run `recjobs run` first")
    run_id, artifacts_dir, rules_json = served
    bundle = read_bundle(run_id, served_run_dir(artifacts_root, run_id, artifacts_dir))
    rows, unknown_ids = bundle.rows_of(liked)
    left_out = [rows, bundle.rows_of(blocked_ids(conn, run_id, rules_json, time.time()))[0]]
    if user_id is not None:
        hidden = [r[0] for r in conn.execute(db.sql("cold_start_job.hidden"), {"user_id": user_id})]
        left_out.append(bundle.rows_of(hidden)[0])
    method, best, best_scores, why = new_user_top(bundle, rows, np.concatenate(left_out), k)
    movie_ids = [int(m) for m in bundle.movie_ids[best]]
    best_scores = [round(float(s), 6) for s in best_scores]
    because = [int(bundle.movie_ids[r]) if r >= 0 else None for r in why.tolist()]
    named = sorted(set(movie_ids) | {b for b in because if b is not None})
    titles = conn.execute(db.sql("cold_start_job.movies"), {"ids": json.dumps(named)}).fetchall()
    movies = {row[0]: tuple(row[1:]) for row in titles}
    return ColdStartAnswer(
        run_id,
        method,
        liked,
        tuple(int(i) for i in unknown_ids),
        k,
        tuple(
            Recommendation(m, *movies.get(m, (None, None, None)), s, b, movies.get(b, (None,))[0])
            for m, s, b in zip(movie_ids, best_scores, because, strict=True)
        ),
    )


def cold_start(settings: Settings, liked, k: int = 10, user_id: int | None = None) -> ColdStartResult:
    """Recommend k movies to a new user from the movies they like, using the published run and
    its rules in force (and leaving out what `user_id` hid, when given); the request and the
    answer are stored in cold_start_requests / cold_start_recommendations."""
    started = time.perf_counter()
    liked = parse_liked(liked)
    k = check_k(k)
    user_id = check_user_id(user_id)
    if not Path(settings.db).is_file():
        raise StateError(f"{settings.db}: no database; run `recjobs run` first")
    # The served run, its bundle and its titles are read from one snapshot, without the write
    # lock, so the answer comes from one run entirely even if another is published meanwhile;
    # only the short insert of the request and its answer takes the write lock.
    with db.plain_reading(settings.db) as conn:
        found = answer(conn, settings.artifacts, liked, k, str(settings.db), user_id)
    db.plain_upgrade(settings.db)
    with db.plain_transaction(settings.db) as conn:
        request_id = _store(conn, found, started)
    result = ColdStartResult(
        request_id=request_id,
        run_id=found.run_id,
        method=found.method,
        liked=found.liked,
        unknown_ids=found.unknown_ids,
        k=found.k,
        recommendations=found.recommendations,
        seconds=round(time.perf_counter() - started, 6),
    )
    log.info(
        "cold start %d: %d liked (%d unknown) -> %d movies by %s from run %s in %.1f ms",
        request_id,
        len(liked),
        len(found.unknown_ids),
        len(found.recommendations),
        found.method,
        found.run_id,
        result.seconds * 1000,
    )
    return result


def _store(conn: sqlite3.Connection, found: ColdStartAnswer, started: float) -> int:
    """Insert the request and its answer; the request id."""
    request_id = conn.execute(
        db.sql("cold_start_job.insert_request"),
        {
            "requested_at": _now(),
            "run_id": found.run_id,
            "liked_json": json.dumps(found.liked),
            "unknown_json": json.dumps(found.unknown_ids),
            "k": found.k,
            "method": found.method,
            "answer_seconds": round(time.perf_counter() - started, 6),
        },
    ).fetchone()[0]
    conn.executemany(
        db.sql("cold_start_job.insert_recommendation"),
        [
            (request_id, rank, r.movie_id, r.score, r.because_movie_id)
            for rank, r in enumerate(found.recommendations, start=1)
        ],
    )
    return request_id


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
