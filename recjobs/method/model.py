"""The ALS model: matrices, fitting, batched top-N and the per-run model files.

implicit >= 0.5 fits on a users x items matrix (no transpose), and `recommend`
returns (ids, scores) arrays, one row per user.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ..settings import Settings
from ..storage import artifacts
from . import scoring

BATCH_USERS = 1024
SCORE_BATCH_ENTRIES = 2**20  # users x items scored at once: 8 MB per float64 array (measured: 2**22 and 2**19 slower)
SEQUENCE_PAIRS_PER_BLOCK = 20_000_000  # about 0.5 GB of pair arrays at a time
# The reference recipe every evaluation compares with: plain ALS (64 factors, regularization
# 0.02, 20 iterations, confidence 1 + 20), no recency weighting, no item-item parts.
REFERENCE_RECIPE = dict(
    factors=64,
    regularization=0.02,
    iterations=20,
    alpha=20.0,
    negative_weight=0.0,
    recency_decay=0.0,
    blend_weight=0.0,
    sequence_weight=0.0,
)


@dataclass(frozen=True)
class Factors:
    """A fitted model as saved under artifacts/<run_id>/: ids map rows back to MovieLens ids."""

    user_ids: np.ndarray
    movie_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    # movies whose item factors come from their content (recjobs.method.content), sorted, and
    # ALS's own factors of them (what a warm start resumes from)
    content_movie_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    content_als_factors: np.ndarray | None = None

    def save(self, path: Path) -> None:
        artifacts.write_atomically(
            path,
            lambda temp: np.savez(
                temp,
                user_ids=self.user_ids,
                movie_ids=self.movie_ids,
                user_factors=self.user_factors,
                item_factors=self.item_factors,
                content_movie_ids=np.asarray(self.content_movie_ids, np.int64),
                **({} if self.content_als_factors is None else {"content_als_factors": self.content_als_factors}),
            ),
        )

    @classmethod
    def read(cls, path: Path) -> Factors:
        with np.load(path) as f:
            content = f["content_movie_ids"] if "content_movie_ids" in f.files else np.empty(0, np.int64)
            als = f["content_als_factors"] if "content_als_factors" in f.files else None
            return cls(f["user_ids"], f["movie_ids"], f["user_factors"], f["item_factors"], content, als)

    @property
    def content_rows(self) -> np.ndarray | None:
        """Item rows of content_movie_ids; None when there are none."""
        return index(self.content_movie_ids, self.movie_ids) if len(self.content_movie_ids) else None

    @property
    def als_item_factors(self) -> np.ndarray:
        """The item factors as ALS left them (the content movies' own), to resume a fit from."""
        if self.content_rows is None or self.content_als_factors is None:
            return self.item_factors
        out = np.array(self.item_factors, copy=True)
        out[self.content_rows] = self.content_als_factors
        return out


def index(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row numbers of `values` in the sorted id array `ids`."""
    return np.searchsorted(ids, values)


def id_rows(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row of each value in the sorted `ids`, -1 where absent."""
    values = np.asarray(values, np.int64)
    if len(ids) == 0:
        return np.full(len(values), -1, np.int64)
    at = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
    return np.where(ids[at] == values, at, -1)


def interaction_weight(rating: np.ndarray, settings: Settings, age: np.ndarray | None = None) -> np.ndarray:
    """1 for positives, negative_weight below the threshold, times exp(-age / recency_decay).

    `age` counts the user's later ratings (0 = their newest); None means "as if newest"
    (a cold-start user's liked movies)."""
    weight = np.where(np.asarray(rating) >= settings.positive_threshold, 1.0, settings.negative_weight)
    if age is not None and settings.recency_decay > 0:
        weight = weight * np.exp(-np.asarray(age, dtype=np.float64) / settings.recency_decay)
    return weight


def confidence(rating: np.ndarray, settings: Settings, age: np.ndarray | None = None) -> np.ndarray:
    """ALS confidence 1 + alpha * interaction_weight; 0 (left out) where the weight is 0."""
    weight = interaction_weight(rating, settings, age)
    return np.where(weight > 0, 1.0 + settings.alpha * weight, 0.0).astype(np.float32)


def recency_age(user_rows: np.ndarray, rated_at: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """For each rating, how many ratings of the same user come after it in (rated_at, movie_id)
    order: 0 for a user's newest rating. Ranks, not seconds, so it means the same on any data set."""
    order = np.lexsort((movie_ids, rated_at, user_rows))
    users = user_rows[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], int)
    ends = np.r_[starts[1:], len(users)]
    lengths = ends - starts
    position = np.arange(len(users)) - np.repeat(starts, lengths)
    age = np.empty(len(users), dtype=np.int64)
    age[order] = np.repeat(lengths, lengths) - 1 - position
    return age


@dataclass(frozen=True)
class Interactions:
    """One set of ratings as users x items matrices: what a model is fitted on and filters."""

    confidence: sp.csr_matrix  # ALS input, 1 + alpha * weight
    profile: sp.csr_matrix  # interaction weights, the user's side of the item-item scores
    positives: sp.csr_matrix  # 1 per positive rating, the input of the item-item similarity
    seen: sp.csr_matrix  # 1 per rated movie, whatever the rating: filtered from top lists
    recent: sp.csr_matrix  # every rating weighted exp(-age / sequence_decay): the last few movies
    sequence_users: np.ndarray  # user row of each rating, in (user, rated_at, movie_id) order
    sequence_items: np.ndarray  # item column of each rating, same order
    trending: np.ndarray  # per item: positives in the last trend_days of these ratings
    positive_times: np.ndarray  # rated_at of each positive, ascending
    positive_items: np.ndarray  # item column of each positive, same order
    trend_days: float
    # per user row, the time the user's trending part is counted back from (None: the newest
    # rating, for everyone, as a nightly run sees it); evaluations set each user's own "now"
    now: np.ndarray | None = None
    blocked: np.ndarray | None = None  # item columns no list may hold (the business rules)

    def trend_scores(self, rows: np.ndarray) -> np.ndarray:
        """log(1 + positives per item in the trend_days before each user's now); users x items."""
        if self.now is None:
            return np.broadcast_to(np.log1p(self.trending.astype(np.float64)), (len(rows), len(self.trending)))
        out = np.empty((len(rows), len(self.trending)))
        times, items = self.positive_times, self.positive_items
        now = np.asarray(self.now[rows])
        # whole seconds, in the times' own type: a float query would copy `times` on every search
        since = np.floor(now - self.trend_days * 86_400).astype(times.dtype)
        lo = np.searchsorted(times, since, side="right")
        hi = np.searchsorted(times, now.astype(times.dtype), side="right")
        for i in range(len(rows)):
            out[i] = np.log1p(np.bincount(items[lo[i] : hi[i]], minlength=len(self.trending)))
        return out


def interactions(
    ratings: dict,
    keep: np.ndarray,
    user_ids: np.ndarray,
    movie_ids: np.ndarray,
    settings: Settings,
    now: np.ndarray | None = None,
    only_users: np.ndarray | None = None,
) -> Interactions:
    """Matrices of the ratings where `keep` is true; recency ages count only those ratings.
    `now`: per user row, when their trending part is counted back from (default: the newest rating).
    `only_users`: the per-user matrices hold only these users' rows (the others are empty), for
    scoring a few users; the trending counts still come from every kept rating."""
    everyone = keep
    if only_users is not None:
        keep = keep & np.isin(ratings["user_id"], only_users)
    rows = index(ratings["user_id"][keep], user_ids)
    cols = index(ratings["movie_id"][keep], movie_ids)
    rating = ratings["rating"][keep]
    age = recency_age(rows, ratings["rated_at"][keep], ratings["movie_id"][keep])
    order = np.lexsort((ratings["movie_id"][keep], ratings["rated_at"][keep], rows))
    shape = (len(user_ids), len(movie_ids))
    weight = interaction_weight(rating, settings, age)
    positive = (rating >= settings.positive_threshold).astype(np.float32)
    if only_users is None:  # the counts over everyone are over these same ratings
        all_rated_at, all_cols, all_positive = ratings["rated_at"][keep], cols, positive > 0
    else:
        all_rated_at, all_cols = ratings["rated_at"][everyone], index(ratings["movie_id"][everyone], movie_ids)
        all_positive = ratings["rating"][everyone] >= settings.positive_threshold
    by_time = np.flatnonzero(all_positive)[np.argsort(all_rated_at[all_positive], kind="stable")]
    return Interactions(
        confidence=matrix(rows, cols, confidence(rating, settings, age), shape),
        profile=matrix(rows, cols, above_floor(weight * positive, settings), shape),
        positives=matrix(rows, cols, positive, shape),
        seen=matrix(rows, cols, np.ones(len(rows), np.float32), shape),
        recent=matrix(rows, cols, above_floor(np.exp(-age / max(settings.sequence_decay, 1e-9)), settings), shape),
        sequence_users=rows[order],
        sequence_items=cols[order],
        trending=scoring.trending_counts(all_rated_at, all_cols, all_positive, len(movie_ids), settings.trend_days),
        positive_times=all_rated_at[by_time],
        positive_items=all_cols[by_time],
        trend_days=settings.trend_days,
        now=now,
    )


def with_exclusions(data: Interactions, hidden_rows, hidden_cols, blocked_cols) -> Interactions:
    """The interactions with movies kept out of the lists besides the rated ones: each user's
    hidden movies (rows, columns: added to `seen`) and the columns the rules block for everyone."""
    hidden_rows, hidden_cols = np.asarray(hidden_rows, np.int64), np.asarray(hidden_cols, np.int64)
    seen = data.seen
    if len(hidden_rows):
        hidden = matrix(hidden_rows, hidden_cols, np.ones(len(hidden_rows), np.float32), seen.shape)
        seen = seen.maximum(hidden).tocsr()
        seen.sort_indices()
    blocked = np.unique(np.asarray(blocked_cols, np.int64)) if len(blocked_cols) else None
    return dataclasses.replace(data, seen=seen, blocked=blocked)


def above_floor(weights: np.ndarray, settings: Settings) -> np.ndarray:
    """A user's side of an item-item part: weights below settings.item_item_min_weight become 0
    (left out); each old rating would add another item's row of neighbours to the score for a
    change of less than that weight."""
    return np.where(weights >= settings.item_item_min_weight, weights, 0.0).astype(np.float32)


def matrix(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape) -> sp.csr_matrix:
    """users x items CSR; zero values are left out."""
    keep = values != 0
    m = sp.csr_matrix((values[keep].astype(np.float32), (rows[keep], cols[keep])), shape=shape)
    m.sum_duplicates()
    m.sort_indices()
    return m


def new_als(settings: Settings):
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(
        factors=settings.factors,
        regularization=settings.regularization,
        iterations=settings.iterations,
        alpha=1.0,  # confidences are already 1 + alpha * weight
        random_state=settings.random_seed,
        calculate_training_loss=False,
    )


def fit(user_items: sp.csr_matrix, settings: Settings, show_progress: bool = False):
    model = new_als(settings)
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(user_items, show_progress=show_progress)
    return model


class _Converged(Exception):
    """Raised from implicit's per-iteration callback to end a fit that has converged."""


@dataclass(frozen=True)
class FitReport:
    iterations: int  # ALS iterations run
    change: float  # relative change of the item factors in the last iteration
    warm: bool  # started from an earlier fit's factors
    part_seconds: tuple = ()  # (part, seconds) of each part of the method's fit: als, cosine, sequence


def random_start(n_rows: int, settings: Settings, seed_offset: int = 1) -> np.ndarray:
    """Factor rows as implicit starts them (uniform * 0.01), seeded."""
    rng = np.random.default_rng((settings.random_seed, seed_offset))
    return rng.random((n_rows, settings.factors), dtype=np.float32) * 0.01


def start_from(previous: Factors, user_ids: np.ndarray, movie_ids: np.ndarray, settings: Settings):
    """(user_factors, item_factors) to start a fit from: an earlier fit's rows matched by
    MovieLens id, implicit's own random start (uniform * 0.01, seeded) for new users and movies.
    None when the earlier fit has another number of factors."""
    if previous.item_factors.shape[1] != settings.factors:
        return None
    rng = np.random.default_rng(settings.random_seed)
    started = []
    for ids, old_ids, old_factors in (
        (user_ids, previous.user_ids, previous.user_factors),
        (movie_ids, previous.movie_ids, previous.als_item_factors),
    ):
        factors = rng.random((len(ids), settings.factors), dtype=np.float32) * 0.01
        at = id_rows(ids, old_ids)
        known = at >= 0
        factors[known] = old_factors[at[known]]
        started.append(factors)
    return tuple(started)


def fit_until_converged(user_items: sp.csr_matrix, settings: Settings, start=None, show_progress: bool = False):
    """ALS until the item factors change by less than settings.als_tolerance (relative, Frobenius
    norm) in an iteration, at most settings.iterations; from `start` (start_from) when given.
    Returns (model, FitReport)."""
    model = new_als(settings)
    if start is not None:
        model.user_factors, model.item_factors = (np.ascontiguousarray(f, dtype=np.float32) for f in start)
    last = {"iterations": 0, "change": float("nan"), "before": None if start is None else model.item_factors.copy()}

    def check(iteration, _elapsed, _loss):
        now = model.item_factors
        if last["before"] is not None:
            last["change"] = float(np.linalg.norm(now - last["before"]) / max(np.linalg.norm(now), 1e-12))
        last["iterations"], last["before"] = iteration + 1, now.copy()
        if last["change"] < settings.als_tolerance:
            raise _Converged

    with threadpool_limits(limits=1, user_api="blas"):
        try:
            model.fit(user_items, show_progress=show_progress, callback=check)
        except _Converged:
            pass
    return model, FitReport(last["iterations"], round(last["change"], 6), start is not None)


def from_factors(user_factors: np.ndarray, item_factors: np.ndarray, settings: Settings):
    model = new_als(settings)
    model.user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
    model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    return model


def popularity_model(item_counts: np.ndarray, n_users: int, settings: Settings):
    """Popularity as a one-factor model, so it runs through the same batched top-N."""
    return from_factors(np.ones((n_users, 1)), item_counts.reshape(-1, 1), settings)


def score_batch(n_items: int) -> int:
    """Users scored at once by Fitted.recommend: about SCORE_BATCH_ENTRIES scores. BLAS may round
    a user's scores differently in another batch, so shards are cut at multiples of it."""
    return max(16, min(BATCH_USERS, SCORE_BATCH_ENTRIES // max(1, n_items)))


def top_n(
    model, rows: np.ndarray, exclude: sp.csr_matrix, n: int, batch_size: int = BATCH_USERS, filter_items=None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n item rows and scores for user rows, items in `exclude[row]` and `filter_items` (for
    everyone) left out. Batched."""
    n = min(n, model.item_factors.shape[0])
    ids_out, scores_out = [np.empty((0, n), np.int32)], [np.empty((0, n), np.float32)]
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            ids, scores = model.recommend(
                batch, exclude[batch], N=n, filter_already_liked_items=True, filter_items=filter_items
            )
            ids_out.append(ids)
            scores_out.append(scores)
    return np.vstack(ids_out), np.vstack(scores_out)


def similar(model, n: int, content_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The n most similar items (cosine of item factors) for every item, itself left out. Movies
    scored from their content (`content_rows`) get their own similar movies but are never listed
    as one: their predicted factors lie near many movies of their genres."""
    n_items = model.item_factors.shape[0]
    n = min(n, n_items - 1 - (0 if content_rows is None else len(content_rows)))
    ids_out, scores_out = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, n_items, BATCH_USERS):
            batch = np.arange(start, min(start + BATCH_USERS, n_items))
            ids, scores = model.similar_items(batch, N=n + 1, filter_items=content_rows)
            not_self = ids != batch[:, None]
            # keep the first n that are not the item itself (it is usually first, not always)
            order = np.argsort(~not_self, axis=1, kind="stable")[:, :n]
            ids_out.append(np.take_along_axis(ids, order, axis=1))
            scores_out.append(np.take_along_axis(scores, order, axis=1))
    return np.vstack(ids_out), np.vstack(scores_out)


def top_per_row(m: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """The `keep` largest entries of each row (ties at the cut kept), in place."""
    lengths = np.diff(m.indptr)
    if lengths.max(initial=0) > keep:
        for i in np.flatnonzero(lengths > keep):
            start, end = m.indptr[i], m.indptr[i + 1]
            row = m.data[start:end]
            row[row < np.partition(row, len(row) - keep)[len(row) - keep]] = 0
        m.eliminate_zeros()
    return m


def item_similarity(positives: sp.csr_matrix, settings: Settings) -> sp.csr_matrix | None:
    """Items x items cosine similarity of the positives, the item_neighbours nearest per item,
    the item itself left out. None when blend_weight is 0."""
    if settings.blend_weight <= 0:
        return None
    from implicit.nearest_neighbours import all_pairs_knn

    norms = np.sqrt(np.asarray(positives.power(2).sum(axis=0)).ravel())
    normalized = (positives @ sp.diags(1.0 / np.maximum(norms, 1e-12))).tocsr().astype(np.float64)
    # every core (num_threads=0): each row is computed on its own, so the result is the same as on one
    similarity = all_pairs_knn(normalized, settings.item_neighbours + 1, show_progress=False, num_threads=0).tocsr()
    similarity.setdiag(0)
    similarity.eliminate_zeros()
    return similarity.astype(np.float32)


def sequence_similarity(data: Interactions, n_items: int, settings: Settings) -> sp.csr_matrix | None:
    """Items x items: how often two movies were rated within sequence_window ratings of each
    other by the same user (any rating), over sqrt(n_i * n_j); the item_neighbours largest per
    movie. None when sequence_weight is 0. Built in blocks of rows of about
    SEQUENCE_PAIRS_PER_BLOCK pairs, so its memory does not grow with the number of pairs."""
    if settings.sequence_weight <= 0:
        return None
    users, items = data.sequence_users, data.sequence_items.astype(np.int32)
    item_counts = np.bincount(items, minlength=n_items).astype(np.float64)
    scale = 1.0 / np.sqrt(np.maximum(item_counts, 1.0))
    window = min(settings.sequence_window, max(0, len(items) - 1))
    # an item's row holds about 2 * window pairs per rating of it: rows split by that load
    load = np.cumsum(item_counts * 2 * window)
    n_blocks = max(1, int(np.ceil(load[-1] / SEQUENCE_PAIRS_PER_BLOCK))) if n_items and load[-1] else 1
    cuts = np.searchsorted(load, np.arange(1, n_blocks) * load[-1] / n_blocks) if n_blocks > 1 else []
    bounds = np.unique(np.r_[0, cuts, n_items]).astype(np.int64)
    # the ratings' positions grouped by item: a block's ratings are one slice, so each block
    # looks only at its own ratings' neighbours (within the same user's run of ratings)
    by_item = np.argsort(items, kind="stable")
    item_starts = np.r_[0, np.cumsum(np.bincount(items, minlength=n_items))].astype(np.int64)
    run_starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], np.int64)
    run_lengths = np.diff(np.r_[run_starts, len(users)])
    user_start = np.repeat(run_starts, run_lengths)  # per rating: where its user's ratings start, end
    user_end = user_start + np.repeat(run_lengths, run_lengths)
    blocks = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        mine = np.sort(by_item[item_starts[lo] : item_starts[hi]])  # in rating order: near reads
        mine_items, mine_start, mine_end = items[mine], user_start[mine], user_end[mine]
        rows, cols = [np.empty(0, np.int32)], [np.empty(0, np.int32)]  # no pairs at all: an empty block
        for offset in range(1, window + 1):  # each rating with its user's `offset` later and earlier ones
            for near, step in ((mine + offset < mine_end, offset), (mine - offset >= mine_start, -offset)):
                row, col = mine_items[near], items[mine[near] + step]
                pair = row != col  # a movie is not its own neighbour
                rows.append(row[pair] - lo)
                cols.append(col[pair])
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(hi - lo, n_items))
        counts.sum_duplicates()  # sorted indices too
        counts.data *= np.repeat(scale[lo:hi], np.diff(counts.indptr))  # as diags(row scale) @ counts
        counts.data *= scale[counts.indices]  # @ diags(column scale)
        blocks.append(top_per_row(counts, settings.item_neighbours).astype(np.float32))
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((n_items, n_items), dtype=np.float32)


def save_similarity(path: Path, similarity: sp.csr_matrix | None) -> None:
    if similarity is not None:
        artifacts.write_atomically(path, lambda temp: sp.save_npz(temp, similarity))
    elif Path(path).exists():
        Path(path).unlink()


def read_similarity(path: Path) -> sp.csr_matrix | None:
    return sp.load_npz(path).tocsr() if Path(path).is_file() else None


@dataclass(frozen=True)
class Fitted:
    """The evaluated and published method: ALS factors, the cosine item-item similarity of
    positives and the sequence similarity (each None when its blend weight is 0)."""

    als: object
    similarity: sp.csr_matrix | None = None  # cosine item-item of positives
    sequence: sp.csr_matrix | None = None
    fit_report: FitReport | None = None  # how the ALS part was fitted (None: read from files)
    # item rows whose ALS factors come from their content (recjobs.method.content): no item-item
    # data, so each item-item part takes their standardized ALS score instead
    content_rows: np.ndarray | None = None
    content_als_factors: np.ndarray | None = None  # ALS's own factors of content_rows (warm starts)

    def item_item_parts(self, data: Interactions, settings: Settings) -> list:
        """(weight, item-item matrix, the users' side) of each item-item part blended in."""
        return [
            (weight, similarity, profile)
            for weight, similarity, profile in (
                (settings.blend_weight, self.similarity, data.profile),
                (settings.sequence_weight, self.sequence, data.recent),
            )
            if similarity is not None and weight > 0
        ]

    def scores(self, rows: np.ndarray, data: Interactions, settings: Settings) -> np.ndarray:
        """standardized ALS scores + blend_weight * standardized cosine item-item scores of the
        user's recency-weighted positives + sequence_weight * standardized sequence scores of
        the user's last few ratings + trend_weight * standardized trending scores; users x items
        (scoring.blend, with the sparse parts standardized through their nonzeros only)."""
        als = np.asarray(self.als.user_factors[rows] @ self.als.item_factors.T, np.float64)
        parts = self.item_item_parts(data, settings)
        if not parts and settings.trend_weight <= 0:
            return als
        total = scoring.standardized(als, overwrite=True)
        content_rows = self.content_rows if self.content_rows is not None and len(self.content_rows) and parts else None
        content_als = None if content_rows is None else total[:, content_rows]
        for weight, similarity, profile in parts:
            # a sparse product has no duplicate entries (its indices may be unsorted): as required
            scoring.add_standardized_sparse(total, weight, (profile[rows] @ similarity).tocsr())
        if content_rows is not None:
            total[:, content_rows] = content_als * (1.0 + sum(weight for weight, _, _ in parts))
        if settings.trend_weight > 0:
            if data.now is None:  # one trending vector for everyone: standardized once
                total += settings.trend_weight * scoring.standardized(np.log1p(data.trending.astype(np.float64)))
            else:
                total += settings.trend_weight * scoring.standardized(data.trend_scores(rows))
        return total

    def recommend(self, rows: np.ndarray, data: Interactions, n: int, settings: Settings):
        """Top-n item rows and scores per user row, every movie in data.seen left out. Batched."""
        batch_size = score_batch(self.als.item_factors.shape[0])
        if self.similarity is None and self.sequence is None and settings.trend_weight <= 0:  # implicit's own top-N
            return top_n(self.als, rows, data.seen, n, batch_size, filter_items=data.blocked)
        n = min(n, self.als.item_factors.shape[0])
        ids_out, scores_out = [np.empty((0, n), np.int64)], [np.empty((0, n))]
        with threadpool_limits(limits=1, user_api="blas"):
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                scores = self.scores(batch, data, settings)
                if data.blocked is not None:
                    scores[:, data.blocked] = scoring.FILTERED
                ids, scores = scoring.top_n(scores, *data.seen[batch].nonzero(), n, overwrite=True)
                ids_out.append(ids)
                scores_out.append(scores)
        return np.vstack(ids_out), np.vstack(scores_out)

    def diversified(self, rows, data: Interactions, n: int, settings: Settings, recommend=None):
        """`recommend` (default self.recommend) for top-n lists, re-ranked by settings.diversity
        (recjobs.method.diversity) over its best CANDIDATES * n when above 0."""
        recommend = recommend or self.recommend
        if settings.diversity <= 0:
            return recommend(rows, data, n, settings)
        from . import diversity

        items, scores = recommend(rows, data, diversity.CANDIDATES * n, settings)
        return diversity.rerank(items, scores, self.als.item_factors, settings.diversity, n)

    def recommend_candidates(
        self, rows: np.ndarray, candidates: dict, data: Interactions, n: int, settings: Settings, per_part: int = 0
    ):
        """Top-n item rows and scores per user row, among the user's `candidates` (row -> item
        rows, such as Spark's ALS top spark_candidates) and the `per_part` (default
        spark_candidates) best movies of each item-item part and of the trending part, every
        movie in data.seen left out; a user left with fewer than n gets ALS's own best unrated
        movies too. Each candidate gets the score `scores` gives it (each part standardized over
        the user's whole row), so the lists are `recommend`'s whenever its top-n are among the
        candidates. Padded like `recommend` only when the user has rated nearly every movie."""
        per_part = per_part or settings.spark_candidates
        n_items = self.als.item_factors.shape[0]
        n = min(n, n_items)
        parts = self.item_item_parts(data, settings)
        trend = settings.trend_weight > 0
        trending = np.log1p(data.trending.astype(np.float64))
        ids_out, scores_out = [np.empty((0, n), np.int64)], [np.empty((0, n))]
        with threadpool_limits(limits=1, user_api="blas"):
            batch_size = score_batch(n_items)
            for start in range(0, len(rows), batch_size):
                batch = np.asarray(rows[start : start + batch_size])
                seen = data.seen[batch]
                if data.blocked is not None:  # blocked movies count as seen: never candidates
                    seen = seen.maximum(blocked_matrix(data.blocked, len(batch), n_items)).tocsr()
                seen_dense = seen.toarray() > 0  # at most SCORE_BATCH_ENTRIES
                given = [np.asarray(candidates.get(int(row), ()), np.int64) for row in batch]
                found = [(np.repeat(np.arange(len(batch)), [len(g) for g in given]), np.concatenate([[], *given]))]
                products = [(weight, (profile[batch] @ similarity).tocsr()) for weight, similarity, profile in parts]
                for _, product in products:  # each part's best movies the user has not rated
                    unseen = (product - product.multiply(seen)).tocsr()
                    unseen.eliminate_zeros()
                    best = top_per_row(unseen, per_part).tocoo()
                    found.append((best.row, best.col))
                if trend:
                    if data.now is None:  # the same trending movies for everyone
                        trend_rows = np.broadcast_to(trending, (len(batch), n_items))
                    else:  # each user's own "now" (evaluations): their own trending movies
                        per_user_trend = scoring.standardized(data.trend_scores(batch))
                        trend_rows = per_user_trend
                    found.append(unseen_top(trend_rows, seen_dense, per_part))
                found_matrix = candidate_matrix(found, seen, n_items)
                short = np.flatnonzero(np.diff(found_matrix.indptr) < n)
                if len(short):  # too few left once rated movies are out: ALS's own best unrated ones
                    rows_short, cols_short = unseen_top(
                        self.als.user_factors[batch[short]] @ self.als.item_factors.T, seen_dense[short], n
                    )
                    found.append((short[rows_short], cols_short))
                    found_matrix = candidate_matrix(found, seen, n_items)
                found = found_matrix
                row_of = np.repeat(np.arange(len(batch)), np.diff(found.indptr))
                cols = found.indices.astype(np.int64)
                users = self.als.user_factors[batch]
                als = np.einsum("ef,ef->e", users[row_of], self.als.item_factors[cols]).astype(np.float64)
                if not parts and not trend:
                    total = als
                else:
                    total = scoring.standardized_at(als, row_of, *scoring.dot_row_stats(users, self.als.item_factors))
                content = np.isin(cols, self.content_rows) if self.content_rows is not None and products else None
                content_als = None if content is None else total[content]
                for weight, product in products:
                    product.sort_indices()
                    _, mean, spread = scoring.sparse_row_stats(product, n_items)
                    values = scoring.values_at(product, row_of, cols)
                    total += weight * scoring.standardized_at(values, row_of, mean, spread)
                if content is not None:  # as scores does: their ALS score stands in for each item-item part
                    total[content] = content_als * (1.0 + sum(weight for weight, _ in products))
                if trend:
                    if data.now is None:
                        total += settings.trend_weight * scoring.standardized(trending)[cols]
                    else:
                        total += settings.trend_weight * per_user_trend[row_of, cols]
                top_cols, top_scores = scoring.top_n_entries(row_of, cols, total, len(batch), n)
                ids_out.append(top_cols)
                scores_out.append(top_scores)
        return np.vstack(ids_out), np.vstack(scores_out)

    def factors(self, user_ids, movie_ids) -> Factors:
        """The ALS part with its id maps, as saved."""
        content = np.asarray(movie_ids)[self.content_rows] if self.content_rows is not None else np.empty(0, np.int64)
        return Factors(
            user_ids, movie_ids, self.als.user_factors, self.als.item_factors, content, self.content_als_factors
        )

    def save(self, directory: Path, name: str, user_ids, movie_ids) -> Path:
        """artifacts/<run_id>/model_<name>.npz and its item-item matrices."""
        path = Path(directory) / artifacts.model_file(name)
        self.factors(user_ids, movie_ids).save(path)
        save_similarity(Path(directory) / artifacts.similarity_file(name), self.similarity)
        save_similarity(Path(directory) / artifacts.sequence_file(name), self.sequence)
        return path

    @classmethod
    def read(cls, directory: Path, name: str, settings: Settings) -> tuple[Fitted, Factors]:
        """The `name` model of a run and its factors (with the id maps)."""
        factors = Factors.read(artifacts.require(directory, artifacts.model_file(name)))
        fitted = cls(
            from_factors(factors.user_factors, factors.item_factors, settings),
            read_similarity(Path(directory) / artifacts.similarity_file(name)),
            read_similarity(Path(directory) / artifacts.sequence_file(name)),
            content_rows=factors.content_rows,
            content_als_factors=factors.content_als_factors,
        )
        return fitted, factors


def fold_in(fitted: Fitted, rows: np.ndarray, confidence: sp.csr_matrix, settings: Settings) -> Fitted:
    """The fit with the ALS factors of user `rows` re-solved from `confidence` (their rows of a
    users x items confidence matrix) against its item factors: implicit's recalculate_user,
    one exact least-squares step per user. The item-item parts are the fit's own."""
    user_factors = np.array(fitted.als.user_factors, copy=True)
    if len(rows):
        with threadpool_limits(limits=1, user_api="blas"):
            user_factors[rows] = fitted.als.recalculate_user(rows, confidence[rows])
    als = from_factors(user_factors, fitted.als.item_factors, settings)
    return dataclasses.replace(fitted, als=als)


def unseen_top(scores: np.ndarray, seen: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the `keep` best-scored unseen movies of each row of a dense matrix."""
    scores = np.where(seen, -np.inf, scores)
    keep = min(keep, scores.shape[1])
    top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
    rows = np.repeat(np.arange(len(scores)), keep)
    cols = top.ravel()
    usable = np.isfinite(scores[rows, cols])
    return rows[usable], cols[usable]


def blocked_matrix(blocked: np.ndarray, n_rows: int, n_items: int) -> sp.csr_matrix:
    """n_rows x items, 1 at every blocked column of every row."""
    rows = np.repeat(np.arange(n_rows), len(blocked))
    cols = np.tile(np.asarray(blocked, np.int64), n_rows)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_rows, n_items))


def candidate_matrix(found: list, seen: sp.csr_matrix, n_items: int) -> sp.csr_matrix:
    """Users x items, 1 at every (row, column) found, the movies each user rated left out."""
    rows = np.concatenate([np.asarray(r, np.int64) for r, _ in found])
    cols = np.concatenate([np.asarray(c, np.int64) for _, c in found])
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(seen.shape[0], n_items))
    matrix = (matrix - matrix.multiply(seen)).tocsr()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def fit_method(data: Interactions, settings: Settings, show_progress: bool = False, start=None) -> Fitted:
    """The method's three parts; ALS until converged (fit_until_converged), from `start` when given."""
    n_items = data.seen.shape[1]
    started = time.perf_counter()
    als, report = fit_until_converged(data.confidence, settings, start, show_progress)
    als_done = time.perf_counter()
    similarity = item_similarity(data.positives, settings)
    cosine_done = time.perf_counter()
    sequence = sequence_similarity(data, n_items, settings)
    seconds = (("als", als_done - started), ("cosine", cosine_done - als_done))
    seconds += (("sequence", time.perf_counter() - cosine_done),)
    report = dataclasses.replace(report, part_seconds=tuple((part, round(s, 3)) for part, s in seconds))
    return Fitted(als, similarity, sequence, report)
