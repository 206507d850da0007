"""refresh: lists that react between nights.

Reads the files of --data-dir's incoming/ that are new or changed since the last refresh of
the served run: ratings (incoming/*.csv) and hidden movies (incoming/hidden*.csv). Every
known user with a new rating or a new hidden movie is folded into the served run's model
with their whole history (the run's ratings, earlier refreshes' and the new ones: implicit's
recalculate_user against the run's item factors, the fold-in the night uses for its held-out
users) and scored with the run's method, as the nightly scoring would score that history.
A new user gets the cold-start answer from their liked (positive) ratings. The business rules
are applied; when they changed, or an availability window opened or closed, every list
holding a newly blocked movie is remade too.

All of it is written in one transaction: the users' rows of the served run are replaced
(refreshed_at says when), so readers see the old list or the new one. A refresh that finds
another run published meanwhile writes nothing and says so in one line; the next one applies
the same files to the new run. The next night's run reads incoming/ itself and supersedes
every refresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..method import bundle as cold_start_bundle
from ..method import model, new_users, reasons, rules, scoring
from ..settings import Settings
from ..storage import artifacts, db, movielens, runs
from ..storage.publish import ranked_rows

log = logging.getLogger(__name__)

RATING_COLUMNS = ("user_id", "movie_id", "rating", "rated_at")


@dataclass(frozen=True)
class RefreshResult:
    status: str  # 'refreshed', 'unchanged' (nothing new) or 'skipped' (see reason)
    reason: str
    run_id: str | None
    n_files: int  # incoming files read (new or changed)
    n_ratings: int  # new ratings folded in
    n_hidden: int  # new hidden movies
    n_users: int  # known users whose lists were remade
    n_new_users: int  # new users given the cold-start answer
    n_rule_users: int  # users remade because the rules now block a movie of their list
    refresh_id: int | None
    seconds: float


def refresh_lock_path(settings: Settings) -> Path:
    return Path(settings.db).with_name(Path(settings.db).name + ".refresh.lock")


@contextlib.contextmanager
def one_refresh_at_a_time(settings: Settings):
    """True while this process is the only refresh of the database; False when another holds it."""
    path = refresh_lock_path(settings)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _skipped(reason: str, run_id: str | None, started: float, n_files: int = 0) -> RefreshResult:
    log.info("refresh skipped: %s", reason)
    return RefreshResult(
        "skipped", reason, run_id, n_files, 0, 0, 0, 0, 0, None, round(time.perf_counter() - started, 3)
    )


def refresh(settings: Settings, now: float | None = None) -> RefreshResult:
    """Refresh the served run's lists of every user the new files of incoming/ concern."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    if not Path(settings.db).is_file():
        from ..errors import StateError

        raise StateError(f"{settings.db}: no database; run `recjobs run` first")
    rules_now = rules.read(settings.rules)  # a bad file stops here, before anything is read
    with one_refresh_at_a_time(settings) as alone:
        if not alone:
            return _skipped("another refresh of this database is running", None, started)
        return _refresh(settings, rules_now, now, started)


def _refresh(settings: Settings, rules_now: dict, now: float, started: float) -> RefreshResult:
    with db.reading(settings.db) as conn:
        served = conn.execute(db.query("refresh.served_run")).first()
        if served is None:
            return _skipped("no published run yet", None, started)
        ledger = {r.path: (r.size, r.mtime_ns, r.run_id) for r in conn.execute(db.query("refresh.known_files"))}
        movies = conn.execute(db.query("refresh.movies")).all()
    run_id = served.run_id
    files = changed_files(settings.data_dir, ledger, run_id)
    rating_files = [f for f in files if not f[0].name.startswith("hidden")]
    hidden_files = [f for f in files if f[0].name.startswith("hidden")]
    incoming = read_new_ratings(settings.data_dir, [f[0] for f in rating_files])
    hidden = movielens.read_hidden_files(settings.data_dir, [f[0] for f in hidden_files])

    rules_before = rules.from_json(served.rules_json)
    movie_ids = np.array([m[0] for m in movies], np.int64)
    genres, years = [m[1] for m in movies], [m[2] for m in movies]
    blocked_now = rules.blocked(rules_now, movie_ids, genres, years, now)
    blocked_before = rules.blocked(rules_before, movie_ids, genres, years, rules_before.get("as_of", now))
    newly_blocked = np.setdiff1d(blocked_now, blocked_before)
    rules_changed = not rules.same({k: v for k, v in rules_before.items() if k != "as_of"}, rules_now)

    with db.reading(settings.db) as conn:
        users = np.unique(np.r_[incoming["user_id"], hidden["user_id"]]).astype(np.int64)
        history, pending = user_histories(conn, run_id, users, incoming)
        hidden_before = _hidden_of(conn, users)
        rule_users = np.empty(0, np.int64)
        if len(newly_blocked):
            holding = conn.execute(
                db.query("refresh.users_holding"), {"run_id": run_id, "movie_ids": _json(newly_blocked)}
            )
            rule_users = np.array([r[0] for r in holding], np.int64)
        seen = set(zip(hidden_before["user_id"].tolist(), hidden_before["movie_id"].tolist(), strict=True))
        is_new = [(u, m) not in seen for u, m in zip(hidden["user_id"], hidden["movie_id"], strict=True)]
        new_hidden = hidden[np.array(is_new, bool)]
        affected = np.unique(np.r_[pending["user_id"], new_hidden["user_id"], rule_users]).astype(np.int64)
        others = np.setdiff1d(affected, users)  # remade for the rules alone
        if len(others):
            history = pd.concat([history, user_histories(conn, run_id, others, _frame([]))[0]], ignore_index=True)
            hidden_before = pd.concat([hidden_before, _hidden_of(conn, others)], ignore_index=True)
    if not len(affected) and not rules_changed:
        if files:
            with db.transaction(settings.db) as conn:
                _record_files(conn, files, run_id)
        seconds = round(time.perf_counter() - started, 3)
        log.info("refresh: nothing new for run %s (%d files read) in %.2fs", run_id, len(files), seconds)
        return RefreshResult(
            "unchanged", "no new rating, hidden movie or rule", run_id, len(files), 0, 0, 0, 0, 0, None, seconds
        )

    run_dir = artifacts.served_run_dir(settings.artifacts, run_id, served.artifacts_dir)
    all_hidden = pd.concat([new_hidden, hidden_before], ignore_index=True)
    lists = score_users(settings, run_dir, run_id, affected, history, all_hidden, blocked_now)
    refreshed_at = runs.now()

    from sqlalchemy.exc import OperationalError

    try:
        with db.transaction(settings.db) as conn:
            current = conn.execute(db.query("publish.current_id")).scalar()
            if current != run_id:
                return _skipped(
                    f"run {current} was published while refreshing run {run_id}; the next refresh applies "
                    "the same files to it",
                    run_id,
                    started,
                    len(files),
                )
            for user in affected.tolist():
                conn.exec_driver_sql(db.sql("refresh.delete_user_recommendations"), (run_id, user))
            db.insert_many(
                conn,
                "refresh.insert_recommendation",
                (
                    (*row, refreshed_at)
                    for row in ranked_rows(
                        run_id, lists.user_ids, lists.movie_ids, lists.top_items, lists.top_scores, lists.because
                    )
                ),
            )
            db.insert_many(
                conn,
                "refresh.insert_refresh_rating",
                zip(
                    [run_id] * len(pending),
                    *(pending[c].tolist() for c in RATING_COLUMNS),
                    strict=True,
                ),
            )
            conn.execute(db.query("refresh.forget_older_runs"), {"run_id": run_id})
            db.insert_many(
                conn,
                "refresh.insert_hidden",
                zip(*(new_hidden[c].tolist() for c in ("user_id", "movie_id", "hidden_at")), strict=True),
            )
            if rules_changed or len(newly_blocked):
                in_force = {**rules_now, "as_of": int(now)} if rules_now else {}
                conn.execute(db.query("refresh.set_rules"), {"run_id": run_id, "rules_json": rules.to_json(in_force)})
            _record_files(conn, files, run_id)
            seconds = round(time.perf_counter() - started, 3)
            refresh_id = conn.execute(
                db.query("refresh.insert_refresh"),
                {
                    "run_id": run_id,
                    "refreshed_at": refreshed_at,
                    "n_ratings": len(pending),
                    "n_hidden": len(new_hidden),
                    "n_users": lists.n_known,
                    "n_new_users": lists.n_new,
                    "n_rule_users": len(rule_users),
                    "seconds": seconds,
                },
            ).scalar()
    except OperationalError as e:
        if "locked" in str(e.orig) or "busy" in str(e.orig):
            reason = f"the database stayed busy ({e.orig}); the next refresh applies the same files"
            return _skipped(reason, run_id, started, len(files))
        raise
    result = RefreshResult(
        "refreshed",
        "lists remade",
        run_id,
        len(files),
        len(pending),
        len(new_hidden),
        lists.n_known,
        lists.n_new,
        len(rule_users),
        refresh_id,
        round(time.perf_counter() - started, 3),
    )
    log.info(
        "refresh %d of run %s: %d ratings and %d hidden movies from %d files; %d users refolded, %d new users, "
        "%d by the rules, in %.2fs",
        refresh_id,
        run_id,
        result.n_ratings,
        result.n_hidden,
        result.n_files,
        result.n_users,
        result.n_new_users,
        result.n_rule_users,
        result.seconds,
    )
    return result


# ---- what is new ------------------------------------------------------------------------


def changed_files(data_dir: Path, ledger: dict, run_id: str) -> list[tuple[Path, int, int]]:
    """(path, size, mtime_ns) of the files of incoming/ not yet read for this run, or changed since."""
    ratings_files, hidden_files = movielens.incoming_files(data_dir)
    out = []
    for path in [*ratings_files, *hidden_files]:
        stat = path.stat()
        if ledger.get(str(path)) != (stat.st_size, stat.st_mtime_ns, run_id):
            out.append((path, stat.st_size, stat.st_mtime_ns))
    return out


def _record_files(conn, files, run_id: str) -> None:
    db.insert_many(conn, "refresh.record_file", ((str(p), size, mtime, run_id) for p, size, mtime in files))


def read_new_ratings(data_dir: Path, paths) -> pd.DataFrame:
    """The ratings of these incoming files; a later one (by time, then file) of a (user, movie) wins."""
    frames = [movielens.read_ratings_file(data_dir, p) for p in paths]
    if not frames:
        return pd.DataFrame({c: np.empty(0, np.float64 if c == "rating" else np.int64) for c in RATING_COLUMNS})
    return movielens.merge_rating_files(frames)[list(RATING_COLUMNS)].reset_index(drop=True)


def _ids(users) -> dict:
    return {"user_ids": _json(users)}


def _json(values) -> str:
    return json.dumps([int(v) for v in values])


def _frame(rows) -> pd.DataFrame:
    """Rating rows (tuples) as a frame, column by column (pandas reading Row objects is slow)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(RATING_COLUMNS)
    kinds = (np.int64, np.int64, np.float64, np.int64)
    return pd.DataFrame({c: np.array(v, dtype=k) for c, v, k in zip(RATING_COLUMNS, columns, kinds, strict=True)})


def user_histories(conn, run_id: str, users: np.ndarray, incoming: pd.DataFrame):
    """(every rating of `users`: the run's, earlier refreshes' and the incoming ones, a later
    one of the same movie replacing an earlier; the incoming ratings that are new to the run)."""
    served = _frame(conn.execute(db.query("refresh.served_ratings_of"), _ids(users)).all())
    refreshed = _frame(conn.execute(db.query("refresh.refreshed_ratings_of"), {"run_id": run_id, **_ids(users)}).all())
    before = _latest(pd.concat([served, refreshed], ignore_index=True))
    merged = incoming.merge(before, on=["user_id", "movie_id"], how="left", suffixes=("", "_before"))
    is_new = merged["rating_before"].isna() | (merged["rated_at"] > merged["rated_at_before"])
    pending = merged.loc[is_new, list(RATING_COLUMNS)].reset_index(drop=True)
    return _latest(pd.concat([before, pending], ignore_index=True)), pending


def _latest(ratings: pd.DataFrame) -> pd.DataFrame:
    """One rating per (user, movie): the latest (a refresh's ratings come after the run's)."""
    ordered = ratings.reset_index(drop=True).reset_index().sort_values(["user_id", "movie_id", "rated_at", "index"])
    return ordered.drop_duplicates(["user_id", "movie_id"], keep="last")[list(RATING_COLUMNS)].reset_index(drop=True)


def _hidden_of(conn, users) -> pd.DataFrame:
    rows = conn.execute(db.query("refresh.hidden_of"), _ids(users)).all()
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "hidden_at"]).astype(np.int64)


# ---- the new lists ----------------------------------------------------------------------


@dataclass(frozen=True)
class Lists:
    """Top-k lists of users (row i: user_ids[i]), item rows into movie_ids, as precompute stores them."""

    user_ids: np.ndarray
    movie_ids: np.ndarray
    top_items: np.ndarray
    top_scores: np.ndarray
    because: np.ndarray  # item row of each listed movie's reason, -1: none
    n_known: int
    n_new: int


def score_users(
    settings: Settings,
    run_dir: Path,
    run_id: str,
    users: np.ndarray,
    history: pd.DataFrame,
    hidden: pd.DataFrame,
    blocked_movie_ids: np.ndarray,
) -> Lists:
    """The run's lists for `users` from their whole `history`: known users folded in and scored
    with the run's method (model.Fitted, as the nightly scoring), new users the cold-start answer."""
    run_settings = artifacts.run_model_settings(settings, run_dir)  # the run's k too: lists as long as the night's
    fitted = bundle_fitted(run_id, run_dir, run_settings)
    with np.load(run_dir / artifacts.model_file(artifacts.FULL)) as f:
        user_ids = f["user_ids"]  # only the ids: the item side comes memory-mapped from the bundle
    movie_ids = np.asarray(cold_start_bundle.read_bundle(run_id, run_dir).movie_ids)
    n = min(run_settings.k, len(movie_ids))
    users = np.unique(np.asarray(users, np.int64))
    known = np.isin(users, user_ids)
    top_items = np.full((len(users), n), -1, np.int64)
    top_scores = np.full((len(users), n), scoring.FILTERED)
    because = np.full((len(users), n), reasons.NO_REASON, np.int64)
    history = history[history["movie_id"].isin(movie_ids) & history["user_id"].isin(users)]
    blocked_cols = model.index(np.intersect1d(blocked_movie_ids, movie_ids), movie_ids)
    hidden = hidden[hidden["movie_id"].isin(movie_ids) & hidden["user_id"].isin(users)]

    refolded = users[known]
    if len(refolded):
        items, scores, why = refold(
            fitted, refolded, movie_ids, history, hidden, blocked_cols, run_dir, run_settings, n
        )
        top_items[known], top_scores[known], because[known] = items, scores, why
    for row in np.flatnonzero(~known):
        top_items[row], top_scores[row], because[row] = cold_start_list(
            run_dir, run_id, users[row], movie_ids, history, hidden, blocked_cols, run_settings, n
        )
    return Lists(users, movie_ids, top_items, top_scores, because, int(known.sum()), int((~known).sum()))


def bundle_fitted(run_id: str, run_dir: Path, run_settings: Settings) -> model.Fitted:
    """The run's published model as a Fitted without user factors, from its cold-start bundle:
    item factors and item-item matrices memory-mapped (the model files are compressed; reading
    them took 2.7 s of a refresh at 25M ratings)."""
    import scipy.sparse as sp

    found = cold_start_bundle.read_bundle(run_id, run_dir)
    params = artifacts.read_params(run_dir)
    n_items = len(found.movie_ids)
    names = [
        name
        for name, weight_name, file in cold_start_bundle.ITEM_PARTS
        if (run_dir / file).is_file() and float(params.get(weight_name, 0.0)) > 0
    ]  # the bundle's parts, in the order make_bundle keeps them
    parts = {
        name: sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items), copy=False)
        for name, (_, (indptr, indices, data)) in zip(names, found.item_parts, strict=True)
    }
    no_users = np.zeros((0, found.item_factors.shape[1]), np.float32)
    item_factors = np.array(found.item_factors)  # a writable copy: implicit's solver takes no read-only buffer
    als = model.from_factors(no_users, item_factors, run_settings)
    return model.Fitted(als, parts.get("similarity"), parts.get("sequence"), content_rows=found.content_rows)


def _arrays(history: pd.DataFrame) -> dict:
    return {
        "user_id": history["user_id"].to_numpy(np.int64),
        "movie_id": history["movie_id"].to_numpy(np.int64),
        "rating": history["rating"].to_numpy(np.float32),
        "rated_at": history["rated_at"].to_numpy(np.int64),
    }


def refold(fitted, users, movie_ids, history, hidden, blocked_cols, run_dir, run_settings, n):
    """Top-n rows and scores of known `users` (sorted): their ALS factors re-solved from their
    whole history against the run's item factors, then the run's method, as nightly scoring does."""
    ratings = _arrays(history[history["user_id"].isin(users)])
    hidden = hidden[hidden["user_id"].isin(users)]
    data = model.interactions(ratings, np.ones(len(ratings["rating"]), bool), users, movie_ids, run_settings)
    trending = cold_start_bundle.read_bundle(run_dir.name, run_dir).trending  # the run's, as its nightly lists
    data = model.with_exclusions(
        dataclasses.replace(data, trending=np.asarray(trending, np.float32)),
        model.index(hidden["user_id"].to_numpy(np.int64), users),
        model.index(hidden["movie_id"].to_numpy(np.int64), movie_ids),
        blocked_cols,
    )
    rows = np.arange(len(users))
    no_factors = np.zeros((len(users), fitted.als.factors), np.float32)
    start = model.from_factors(no_factors, fitted.als.item_factors, run_settings)
    folded = model.fold_in(dataclasses.replace(fitted, als=start), rows, data.confidence, run_settings)
    items, scores = folded.diversified(rows, data, n, run_settings)
    return items, scores, reasons.list_reasons(folded, data, run_settings, rows, items)


def cold_start_list(run_dir, run_id, user_id, movie_ids, history, hidden, blocked_cols, run_settings, n):
    """A new user's list: the cold-start answer to their positive ratings (new_users.new_user_top),
    their rated and hidden movies and the blocked ones left out (padded like a nightly list when
    fewer remain)."""
    found = cold_start_bundle.read_bundle(run_id, run_dir)
    mine = history[history["user_id"] == user_id]
    liked = mine.loc[mine["rating"] >= run_settings.positive_threshold, "movie_id"].to_numpy(np.int64)
    rows, _ = found.rows_of(liked)
    exclude = np.r_[
        model.index(mine["movie_id"].to_numpy(np.int64), movie_ids),
        model.index(hidden.loc[hidden["user_id"] == user_id, "movie_id"].to_numpy(np.int64), movie_ids),
        blocked_cols,
    ]
    _, best, best_scores, best_reasons = new_users.new_user_top(found, rows, exclude, n)
    items = np.full(n, -1, np.int64)
    values = np.full(n, scoring.FILTERED)
    why = np.full(n, reasons.NO_REASON, np.int64)
    items[: len(best)], values[: len(best)], why[: len(best)] = best, best_scores, best_reasons
    return items, values, why
