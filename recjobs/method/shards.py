"""Score shards: the published model's users cut into ranges of rows, each range's top-k lists
as a staging file (artifacts/<run_id>/shards/) that precompute publishes with every other shard
in one transaction. The job that writes one is recjobs.jobs.score_shard.

Users are cut into settings.score_shards ranges of rows. The DAG maps one score_shard task
over them (Airflow's executor spreads them over cores or workers); precompute scores in
process any shard whose file is missing or was made from another model, so `recjobs run`
needs no shard files at all. A shard's rows do not depend on how the users were cut.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..settings import Settings
from ..storage import artifacts
from . import model, reasons, spark_engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """Top-k item rows and scores of user rows first_row..first_row + len(top_items) - 1."""

    first_row: int
    top_items: np.ndarray
    top_scores: np.ndarray
    because: np.ndarray  # per listed item, the item row of its reason (recjobs.method.reasons), -1: none


def bounds(n_users: int, n_items: int, n_shards: int) -> np.ndarray:
    """The n_shards + 1 row bounds of the shards, as even as whole scoring batches allow
    (model.score_batch): a user is scored in the same batch however the users are cut, so
    with the same scores to the last bit. More shards than batches leaves some empty."""
    step = model.score_batch(n_items)
    n_batches = -(-n_users // step)
    return np.minimum(np.linspace(0, n_batches, n_shards + 1).round().astype(np.int64) * step, n_users)


def shard_file(directory: Path, shard: int, n_shards: int) -> Path:
    return Path(directory) / "shards" / f"recommendations-{shard + 1:04d}-of-{n_shards:04d}.npz"


def model_stamp(directory: Path, settings: Settings, exclusions: Exclusions | None = None) -> str:
    """What a shard's rows follow from: the published model's file (size, modification time),
    the settings that score and what the lists leave out. A shard file with another stamp is not used."""
    stat = (Path(directory) / artifacts.model_file(artifacts.FULL)).stat()
    digest = exclusions.digest() if exclusions else ""
    return json.dumps([stat.st_size, stat.st_mtime_ns, settings.model_params(), digest], sort_keys=True)


@dataclass(frozen=True)
class Exclusions:
    """What the lists leave out besides rated movies: each user's hidden movies and the movies
    the business rules block (as of `at`, unix seconds)."""

    rules: dict
    at: float
    blocked_movie_ids: np.ndarray
    hidden_user_ids: np.ndarray
    hidden_movie_ids: np.ndarray

    def digest(self) -> str:
        h = hashlib.sha256()
        for array in (self.blocked_movie_ids, self.hidden_user_ids, self.hidden_movie_ids):
            h.update(np.ascontiguousarray(array, np.int64).tobytes() + b"|")
        return h.hexdigest()[:16]

    def rules_in_force(self) -> dict:
        """The rules with the time they were applied at: stored with the run (rules_json)."""
        return {**self.rules, "as_of": int(self.at)} if self.rules else {}

    def apply(self, data: model.Interactions, user_ids: np.ndarray, movie_ids: np.ndarray) -> model.Interactions:
        """The interactions of users `user_ids` x movies `movie_ids` with these left out."""
        rows, cols = model.id_rows(self.hidden_user_ids, user_ids), model.id_rows(self.hidden_movie_ids, movie_ids)
        both = (rows >= 0) & (cols >= 0)
        blocked = model.id_rows(self.blocked_movie_ids, movie_ids)
        return model.with_exclusions(data, rows[both], cols[both], blocked[blocked >= 0])


def run_exclusions(settings: Settings, directory: Path, at: float | None = None) -> Exclusions:
    """The run's exclusions now: the rules file's blocks over the run's catalogue, and the
    hidden movies `load` read plus those the database has (hidden by refreshes since)."""
    import time

    from ..storage import db
    from . import rules as business_rules

    at = time.time() if at is None else at
    rules = business_rules.read(settings.rules)
    blocked = np.empty(0, np.int64)
    if rules:
        movies = artifacts.read_movies(directory)
        years = [
            None if y is None else int(y) for y in movies["year"].astype(object).where(movies["year"].notna(), None)
        ]
        blocked = business_rules.blocked(rules, movies["movie_id"].to_numpy(), movies["genres"].tolist(), years, at)
    hidden = artifacts.read_hidden(directory)
    users, movies_hidden = [hidden["user_id"]], [hidden["movie_id"]]
    if Path(settings.db).is_file():
        with db.reading(settings.db) as conn:
            stored = conn.execute(db.query("refresh.all_hidden")).all()
        users.append(np.array([r[0] for r in stored], np.int64))
        movies_hidden.append(np.array([r[1] for r in stored], np.int64))
    pairs = np.unique(np.stack([np.concatenate(users), np.concatenate(movies_hidden)]).astype(np.int64), axis=1)
    return Exclusions(rules, at, blocked, pairs[0], pairs[1])


def check_shard(shard, n_shards: int) -> int:
    if not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < n_shards:
        raise ConfigError(f"shard {shard!r} is out of range; expected an integer from 0 to {n_shards - 1}")
    return shard


class Scorer:
    """The published model of a run, with everything its users' top lists need."""

    def __init__(self, settings: Settings, run_id: str, exclusions: Exclusions | None = None):
        self.directory = artifacts.run_dir(settings.artifacts, run_id)
        self.settings = artifacts.run_settings(settings, self.directory)  # with the run's blend
        self.fitted, self.factors = model.Fitted.read(self.directory, artifacts.FULL, self.settings)
        self.n_users, self.n_items = len(self.factors.user_ids), len(self.factors.movie_ids)
        self.exclusions = exclusions or run_exclusions(settings, self.directory)

    def stamp(self) -> str:
        return model_stamp(self.directory, self.settings, self.exclusions)

    @functools.cached_property
    def ratings(self) -> dict:
        return artifacts.read_ratings(self.directory)

    def data(self, first_row: int, end_row: int) -> model.Interactions:
        """The matrices of user rows first_row..end_row - 1 only (every rating of theirs; the
        trending counts from every rating): a shard builds and holds its own users, not all."""
        everything = np.ones(len(self.ratings["rating"]), bool)
        users = self.factors.user_ids[first_row:end_row]
        data = model.interactions(
            self.ratings, everything, self.factors.user_ids, self.factors.movie_ids, self.settings, only_users=users
        )
        return self.exclusions.apply(data, self.factors.user_ids, self.factors.movie_ids)

    def score(self, first_row: int, end_row: int) -> Scored:
        rows = np.arange(first_row, end_row)
        data = self.data(first_row, end_row)
        candidates = spark_engine.read_candidates(self.directory, artifacts.FULL, rows)
        recommend = None  # the implicit engine: every movie is scored
        if candidates is not None:

            def recommend(rows, data, n, settings):
                return self.fitted.recommend_candidates(rows, candidates, data, n, settings)

        top_items, top_scores = self.fitted.diversified(rows, data, self.settings.k, self.settings, recommend)
        because = reasons.list_reasons(self.fitted, data, self.settings, rows, top_items)
        return Scored(first_row, top_items, top_scores, because)


def read_shard(directory: Path, shard: int, n_shards: int, lo: int, hi: int, stamp: str) -> Scored | None:
    """A shard's staging file when it is whole and made from this model for these rows; else None."""
    path = shard_file(directory, shard, n_shards)
    try:
        with np.load(path) as f:
            scored = Scored(int(f["first_row"]), f["top_items"], f["top_scores"], f["because"])
            made_from = str(f["stamp"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("%s: unreadable (%s); scoring its users again", path, e)
        return None
    if made_from != stamp or scored.first_row != lo or len(scored.top_items) != hi - lo:
        log.warning("%s: made from another model or other users; scoring its users again", path)
        return None
    return scored


def all_users(
    settings: Settings, run_id: str, exclusions: Exclusions | None = None
) -> tuple[model.Factors, Scored, int]:
    """Every user's top-k of the run's published model, with reasons: (factors, every user's
    Scored, shards whose staging files were used); the shards without a usable file are scored here."""
    scorer = Scorer(settings, run_id, exclusions)
    cuts = bounds(scorer.n_users, scorer.n_items, settings.score_shards)
    stamp = scorer.stamp()
    parts, from_files = [], 0
    for shard, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        scored = read_shard(scorer.directory, shard, settings.score_shards, int(lo), int(hi), stamp)
        from_files += scored is not None
        parts.append(scored or scorer.score(int(lo), int(hi)))
    n = min(settings.k, len(scorer.factors.movie_ids))
    top_items = np.vstack([np.empty((0, n), np.int64)] + [p.top_items for p in parts])
    top_scores = np.vstack([np.empty((0, n))] + [p.top_scores for p in parts])
    because = np.vstack([np.empty((0, n), np.int64)] + [p.because for p in parts])
    return scorer.factors, Scored(0, top_items, top_scores, because), from_files
