"""backtest: replay nightly runs and score what each night would have published.

For each cutoff T (a night at 02:30 UTC), every model is fitted on the ratings made before T,
exactly as the nightly job fits the published model, and nothing is published. Each user
known at T (a rating before T) with a positive in [T, T + window) is scored on those
positives: the movies they went on to like in the days after the run. Movies first rated
after T are left out of the targets (no model could recommend them). Every model filters the
same movies: all the user rated before T.

Models, side by side on the same user-nights:
    model              the method (settings as given)
    als                its ALS part alone (the same fit)
    reference          the reference recipe (recjobs.method.model.REFERENCE_RECIPE), same data and filtering
    popularity         positives per movie before T
    recent_popularity  positives per movie in the `recent_days` before T

Recall@10 = hits / min(10, targets); NDCG@10 binary; hit rate = at least one hit. Pooled over
user-nights with 95% bootstrap intervals that resample users (a user scored on several nights
counts once per draw, with all their nights), and the paired gains of the method over each
baseline; also per night.

The refresh replay: what a refresh between nights (fold a user's new ratings into the night's
model, re-score) gains over the night's lists. The day is the `refresh_days` after the night.
Each user known at the night with at least 2 ratings that day has them split in (rated_at,
movie_id) order: the earlier half (n // 2) and the later rest; ratings of movies the night does
not know count for the split but are otherwise left out. The later positives are the targets
(users with none are skipped). Three top-10 lists, each without the movies rated before the night:
    night           the night's list as served
    night_filtered  the same list, the earlier movies also left out
    refreshed       the user's ALS factors folded in from their ratings before the night and the
                    earlier ones, re-scored with the night's blend and trending part, the earlier
                    movies left out (what the refresh job serves)
Pooled over user-days, with the paired gains of refreshed over the other two.

The new-movies replay (new_movies_replay): can a movie with no ratings enter the lists? The new
movies of a night are those first rated in the `new_movies_days` before it; every rating of them
is held out of that night's ALS fit, as if nobody had rated them yet. Each user known to that fit
who likes a new movie in [T, T + window) ranks the night's new movies (only them) by
    content_ridge       user factors . the movie's factors predicted from its genres, year and
                        tags (a ridge from the content of movies with enough ratings to their
                        ALS factors; recjobs.method.content)
    content_similarity  the content of the user's positives . the movie's content
    content_blend       the two above standardised per user over the new movies, summed
    genre_popularity    the mean over the movie's genres of that genre's share of positives
    user_genres         the same with the user's own genre shares (smoothed with everyone's)
    random              a floor
Recall@K = hits in the top K / min(K, targets), K = 10 and 50, pooled over user-nights with
intervals resampling users; and each content list's Recall@50 as a ratio of genre_popularity's.
Tags are those made before the night. A user's ratings of new movies before the night are not
used at all (not even to filter them).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ..evaluation import blend_choice, peers, temporal
from ..evaluation.metrics import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, CUTOFF, bootstrap_ci, prefix
from ..method import content, model, scoring
from ..settings import Settings
from ..storage import artifacts, db, runs
from ..storage.movielens import read_catalog

log = logging.getLogger(__name__)

DAY = 86_400
NIGHT = 2 * 3600 + 30 * 60  # the nightly run starts at 02:30 UTC
MODELS = (
    "model",
    "configured",
    "als",
    "reference",
    "popularity",
    "recent_popularity",
    "ease",
    "item_knn",
    "no_content",
)
BASELINES = ("popularity", "recent_popularity", "reference", "als", "configured", "no_content")
PEERS = ("ease", "item_knn")
METRICS = ("recall_at_10", "ndcg_at_10", "hit_rate_at_10")
SEGMENT = "backtest"  # run_metrics segment of the pooled figures; per night: backtest:<date>
REFRESH_LISTS = ("night", "night_filtered", "refreshed")
REFRESH_SEGMENT = "backtest_refresh"  # run_metrics segment of the refresh replay's pooled figures
NEW_MOVIES_LISTS = ("content_ridge", "content_similarity", "content_blend", "genre_popularity", "user_genres", "random")
CONTENT_LISTS = NEW_MOVIES_LISTS[:3]
NEW_MOVIES_CONTENT = "content_ridge"  # the content score the nightly would use
NEW_MOVIES_CUTOFFS = (10, 50)
NEW_MOVIES_SEGMENT = "backtest_new_movies"


@dataclass(frozen=True)
class BacktestResult:
    output_dir: str
    cutoffs: tuple[str, ...]  # ISO dates of the nights
    n_user_nights: int
    n_users: int
    recall_at_10: dict  # model -> pooled value
    recall_at_10_ci: dict  # model -> (low, high)
    ndcg_at_10: dict
    hit_rate_at_10: dict
    recall_gain: dict  # baseline or peer -> (gain, low, high), paired
    ndcg_gain: dict
    choices: tuple  # per night: (date, trend_weight, trend_days, blend_weight, sequence_weight, source)
    ease_lambda: float | None  # chosen on the window before the first night; None: EASE not fitted
    refresh_days: float  # the refresh replay's day after each night; 0: not replayed
    refresh_user_days: int
    refresh_users: int
    # the replay's figures, None when no user-day qualified: list (REFRESH_LISTS) -> pooled value
    refresh_recall_at_10: dict | None
    refresh_recall_at_10_ci: dict | None  # list -> (low, high)
    refresh_ndcg_at_10: dict | None
    refresh_gain: dict | None  # metric -> {"night" | "night_filtered": (gain, low, high)} of refreshed, paired
    seconds: float
    new_movies_days: float = 0.0  # the new-movies replay's span before each night; 0: not replayed
    new_movies_user_nights: int = 0
    new_movies_users: int = 0
    new_movies_candidates: tuple = ()  # per night with targets: (date, new movies ranked)
    # the replay's figures, None when no user-night qualified: list (NEW_MOVIES_LISTS) -> pooled value
    new_movies_recall_at_10: dict | None = None
    new_movies_recall_at_50: dict | None = None
    new_movies_recall_at_50_ci: dict | None = None  # list -> (low, high)
    # content list -> (Recall@50 of it / Recall@50 of genre_popularity, low, high)
    new_movies_ratio: dict | None = None


def night_before(timestamp: float) -> int:
    """The last 02:30 UTC at or before `timestamp` (Unix seconds)."""
    return int((timestamp - NIGHT) // DAY * DAY + NIGHT)


def nightly_cutoffs(
    rated_at: np.ndarray, nights: int, window_days: float, period: tuple[float, float] = (0.75, 1.0)
) -> np.ndarray:
    """`nights` distinct nights spread evenly over a period of the timeline, given as shares of
    the ratings made (default: the last quarter): from the night when period[0] of the ratings
    had been made to the last night whose whole window ends before period[1] had been."""
    last = night_before(np.quantile(rated_at, period[1]) - window_days * DAY)
    first = min(night_before(np.quantile(rated_at, period[0])), last)
    return np.unique([night_before(t) for t in np.linspace(first, last, max(1, nights))])


def rating_arrays(catalog) -> dict[str, np.ndarray]:
    r = catalog.ratings
    return {name: r[name].to_numpy(kind) for name, kind in artifacts.RATING_ARRAYS.items()}


def choose_ease_lambda(ratings: dict, first_cutoff: int, settings: Settings, window_days: float) -> float | None:
    """EASE's lambda with the best Recall@10 on the window before the first night (fitted on the
    ratings before that window); None when EASE does not fit the catalogue or no user qualifies."""
    win = temporal.window(ratings, first_cutoff - int(window_days * DAY), first_cutoff, settings)
    if win is None:
        return None
    data = model.interactions(ratings, win.keep, win.user_ids, win.movie_ids, settings)
    recalls = {}
    for lam in peers.EASE_LAMBDAS:
        ease = peers.fit_ease(data.positives, lam)
        if ease is None:
            return None
        recalls[lam] = temporal.score_top(lambda rows, e=ease: e.scores(data.positives, rows), win, data.seen)[
            :, 0
        ].mean()
    best = max(recalls, key=lambda lam: (recalls[lam], -lam))
    log.info("backtest: EASE lambda %g (Recall@10 %s before the first night)", best, recalls)
    return best


def day_split(ratings: dict, win: temporal.Window, refresh_days: float, settings: Settings):
    """The refresh replay's users of a night: (user_ids sorted, earlier: a mask of `ratings`, their
    earlier ratings of known movies, targets: users x win.movie_ids, 1 per later positive), or None
    when no user qualifies."""
    day = np.flatnonzero(
        (ratings["rated_at"] >= win.cutoff)
        & (ratings["rated_at"] < win.cutoff + refresh_days * DAY)
        & np.isin(ratings["user_id"], win.user_ids)
    )
    if not len(day):
        return None
    day = day[np.lexsort((ratings["movie_id"][day], ratings["rated_at"][day], ratings["user_id"][day]))]
    users, movies = ratings["user_id"][day], ratings["movie_id"][day]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(day)])
    n = np.repeat(counts, counts)  # the user's ratings that day
    position = np.arange(len(day)) - np.repeat(starts, counts)
    known = (n >= 2) & np.isin(movies, win.movie_ids)
    earlier = position < n // 2  # n >= 2: at least one earlier and one later rating
    target = known & ~earlier & (ratings["rating"][day] >= settings.positive_threshold)
    user_ids = np.unique(users[target])
    if not len(user_ids):
        return None
    earlier_mask = np.zeros(len(ratings["user_id"]), bool)
    earlier_mask[day[known & earlier & np.isin(users, user_ids)]] = True
    targets = sp.csr_matrix(
        (
            np.ones(int(target.sum()), np.float32),
            (model.index(users[target], user_ids), model.index(movies[target], win.movie_ids)),
        ),
        shape=(len(user_ids), len(win.movie_ids)),
    )
    targets.sum_duplicates()
    targets.data[:] = 1
    return user_ids, earlier_mask, targets


def refreshed_model(
    ratings: dict,
    win: temporal.Window,
    data: model.Interactions,
    fitted: model.Fitted,
    settings: Settings,
    user_ids: np.ndarray,
    earlier: np.ndarray,
) -> tuple[model.Fitted, model.Interactions]:
    """What a refresh serves `user_ids` after their `earlier` ratings: the night's fit with their
    ALS factors folded in from their history (ratings before the night and the earlier ones),
    and that history's matrices (only their rows) with the night's trending part."""
    history = model.interactions(
        ratings, win.keep | earlier, win.user_ids, win.movie_ids, settings, only_users=user_ids
    )
    history = dataclasses.replace(
        history, trending=data.trending, positive_times=data.positive_times, positive_items=data.positive_items
    )
    return model.fold_in(fitted, model.index(user_ids, win.user_ids), history.confidence, settings), history


def refresh_lists(
    fitted: model.Fitted,
    data: model.Interactions,
    refreshed: model.Fitted,
    history: model.Interactions,
    rows: np.ndarray,
    settings: Settings,
) -> dict[str, np.ndarray]:
    """The top-10 item rows of user `rows` in each of REFRESH_LISTS (scored with `settings`, the
    night's chosen blend). Batched."""
    tops = {name: [np.empty((0, CUTOFF), np.int64)] for name in REFRESH_LISTS}
    batch_size = model.score_batch(data.seen.shape[1])
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            night = fitted.scores(batch, data, settings)
            scored = {
                "night": (night, data.seen[batch]),
                "night_filtered": (night, history.seen[batch]),
                "refreshed": (refreshed.scores(batch, history, settings), history.seen[batch]),
            }
            for name, (scores, seen) in scored.items():
                tops[name].append(scoring.top_n(scores, *seen.nonzero(), CUTOFF)[0])  # copies the scores
    return {name: np.vstack(top) for name, top in tops.items()}


def refresh_replay(
    ratings: dict,
    win: temporal.Window,
    data: model.Interactions,
    fitted: model.Fitted,
    settings: Settings,
    chosen: Settings,
    refresh_days: float,
):
    """(user_ids, list -> per-user (Recall@10, NDCG@10, hit)) of a night's refresh replay, or None
    when no user qualifies. Only the qualifying users are folded in and scored."""
    split = day_split(ratings, win, refresh_days, settings)
    if split is None:
        return None
    user_ids, earlier, targets = split
    refreshed, history = refreshed_model(ratings, win, data, fitted, settings, user_ids, earlier)
    tops = refresh_lists(fitted, data, refreshed, history, model.index(user_ids, win.user_ids), chosen)
    return user_ids, {name: temporal.list_metrics(top, targets) for name, top in tops.items()}


def with_trend_days(data: model.Interactions, ratings: dict, win, settings: Settings) -> model.Interactions:
    """The night's matrices with the trending part counted over settings.trend_days, as a run
    that chose them scores (the fit's matrices count the configured days)."""
    if settings.trend_days == data.trend_days:
        return data
    kept = win.keep
    cols = model.index(ratings["movie_id"][kept], win.movie_ids)
    positive = ratings["rating"][kept] >= settings.positive_threshold
    trending = scoring.trending_counts(
        ratings["rated_at"][kept], cols, positive, len(win.movie_ids), settings.trend_days
    )
    return dataclasses.replace(data, trending=trending, trend_days=settings.trend_days)


def new_movie_ids(ratings: dict, cutoff: int, new_days: float) -> np.ndarray:
    """Movies whose first rating falls in [cutoff - new_days, cutoff), sorted."""
    movie_ids, column = np.unique(ratings["movie_id"], return_inverse=True)
    first = np.full(len(movie_ids), np.inf)
    np.minimum.at(first, column, ratings["rated_at"])
    return movie_ids[(first >= cutoff - new_days * DAY) & (first < cutoff)]


def new_movies_scores(ratings: dict, catalog, keep: np.ndarray, user_ids, movie_ids, new_ids, rows, cutoff, settings):
    """list (NEW_MOVIES_LISTS) -> users `rows` x new_ids scores, from a plain ALS fit on the
    ratings where `keep` (users user_ids x movies movie_ids) and the content before `cutoff`."""
    data = model.interactions(ratings, keep, user_ids, movie_ids, settings)
    als = model.fit(data.confidence, settings)
    tags = catalog.tags[catalog.tags["tagged_at"] < cutoff]
    features = content.content_features(catalog.movies, tags, np.concatenate([movie_ids, new_ids]))
    known, new = features[: len(movie_ids)], features[len(movie_ids) :]
    n_ratings = np.bincount(data.seen.indices, minlength=len(movie_ids))
    factors = content.new_movie_factors(known, als.item_factors, n_ratings, new)
    genres = content.genre_matrix(catalog.movies, np.concatenate([movie_ids, new_ids]))
    genres_known, genres_new = genres[: len(movie_ids)], genres[len(movie_ids) :]
    ridge_scores = als.user_factors[rows] @ factors.T
    similarity_scores = content.content_similarity(data.positives[rows], known, new)
    return {
        "content_ridge": ridge_scores,
        "content_similarity": similarity_scores,
        "content_blend": content.content_blend(ridge_scores, similarity_scores),
        "genre_popularity": content.genre_popularity(data.positives, genres_known, genres_new)[rows],
        "user_genres": content.genre_popularity(data.positives, genres_known, genres_new, personal=True)[rows],
        "random": np.random.default_rng(cutoff).random((len(rows), len(new_ids))),
    }


def recall_at(scores: np.ndarray, targets: sp.csr_matrix, k: int, tiebreak: np.ndarray) -> np.ndarray:
    """Per user: targets in the top k of `scores` (ties in `tiebreak` order) / min(k, targets)."""
    order = np.lexsort((tiebreak, -scores), axis=-1) if scores.size else np.zeros(scores.shape, int)
    found = np.take_along_axis(targets.toarray() > 0, order[:, :k], axis=1).sum(axis=1)
    return found / np.maximum(np.minimum(k, np.diff(targets.indptr)), 1)


def new_movies_replay(ratings: dict, catalog, cutoff: int, settings: Settings, window_days: float, new_days=60.0):
    """(test user ids, new movies ranked, list -> per-user (Recall@10, Recall@50)) of one night's
    new-movies replay, or None when no new movie or no target. Every rating of the new movies
    before the cutoff is held out of the fit (see the module's docstring)."""
    new_ids = new_movie_ids(ratings, cutoff, new_days)
    if not len(new_ids):
        return None
    is_new = np.isin(ratings["movie_id"], new_ids)
    keep = (ratings["rated_at"] < cutoff) & ~is_new
    user_ids, movie_ids = np.unique(ratings["user_id"][keep]), np.unique(ratings["movie_id"][keep])
    later = (
        is_new
        & (ratings["rating"] >= settings.positive_threshold)
        & (ratings["rated_at"] >= cutoff)
        & (ratings["rated_at"] < cutoff + window_days * DAY)
        & np.isin(ratings["user_id"], user_ids)
    )
    if not later.any():
        return None
    test_ids = np.unique(ratings["user_id"][later])
    targets = model.matrix(
        model.index(ratings["user_id"][later], test_ids),
        model.index(ratings["movie_id"][later], new_ids),
        np.ones(int(later.sum()), np.float32),
        (len(test_ids), len(new_ids)),
    )
    rows = model.index(test_ids, user_ids)
    with threadpool_limits(limits=1, user_api="blas"):
        scores = new_movies_scores(ratings, catalog, keep, user_ids, movie_ids, new_ids, rows, cutoff, settings)
    tiebreak = np.random.default_rng(cutoff + 1).random((len(test_ids), len(new_ids)))
    per_user = {
        name: np.column_stack([recall_at(s, targets, k, tiebreak) for k in NEW_MOVIES_CUTOFFS])
        for name, s in scores.items()
    }
    return test_ids, len(new_ids), per_user


def unrated_catalogue(movies: pd.DataFrame, ratings: dict, cutoff: int) -> np.ndarray:
    """The movies a catalogue at the cutoff would list unrated (sorted): every movie of `movies`
    not rated before the cutoff whose year is at most the cutoff's (movies without a year are
    left out). MovieLens does not say when a movie joined it; the year bounds it."""
    year = pd.to_numeric(movies["year"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    cutoff_year = datetime.fromtimestamp(cutoff, UTC).year
    listed = movies["movie_id"].to_numpy(np.int64)[year <= cutoff_year]
    return np.setdiff1d(listed, ratings["movie_id"][ratings["rated_at"] < cutoff])


def fit_night(
    ratings: dict, cutoff: int, settings: Settings, window_days: float, previous_choice: dict | None, catalog=None
):
    """A night as the product makes it: (window, its matrices, the method fitted on the ratings
    before the cutoff, the blend choice, the chosen settings, the matrices with their trending
    part, the ALS item factors before the content step or None without it), or None when no user qualifies
    (temporal.window). With `catalog` and min_ratings_to_score above 0, the night knows the
    catalogue's unrated movies (unrated_catalogue) and scores its thin movies from their content
    (tags made before the cutoff), as train does."""
    content_step = catalog is not None and settings.min_ratings_to_score > 0
    unrated = unrated_catalogue(catalog.movies, ratings, cutoff) if content_step else None
    win = temporal.window(ratings, cutoff, cutoff + int(window_days * DAY), settings, unrated_movie_ids=unrated)
    if win is None:
        return None
    data = model.interactions(ratings, win.keep, win.user_ids, win.movie_ids, settings)
    fitted = model.fit_method(data, settings)
    als_factors = fitted.als.item_factors if content_step else None
    if content_step:
        tags = catalog.tags[catalog.tags["tagged_at"] < cutoff]
        fitted, _ = content.score_thin_movies(
            fitted, data.seen, catalog.movies, tags, win.movie_ids, settings.min_ratings_to_score
        )
    choice = blend_choice.choose(ratings, cutoff, settings, previous_choice)
    chosen = blend_choice.with_weights(settings, choice.weights)
    return win, data, fitted, choice, chosen, with_trend_days(data, ratings, win, chosen), als_factors


def one_night(
    ratings: dict,
    cutoff: int,
    settings: Settings,
    window_days: float,
    recent_days: float,
    previous_choice: dict | None = None,
    ease_lambda: float | None = None,
    peers_too: bool = True,
    refresh_days: float = 0.0,
    catalog=None,
):
    """(test users, per-model per-user metrics, the night's blend choice, the refresh replay or
    None) for one cutoff, or None when no user qualifies. The night chooses its blend from the
    ratings before it, as a full night does (previous_choice: the last night's, its fallback).
    refresh_days > 0: also replay a refresh in that day after the night (refresh_replay)."""
    night = fit_night(ratings, cutoff, settings, window_days, previous_choice, catalog)
    if night is None:
        return None
    win, data, fitted, choice, chosen, chosen_data, als_factors = night

    scorers = {
        "model": lambda rows: fitted.scores(rows, chosen_data, chosen),
        "configured": lambda rows: fitted.scores(rows, data, settings),
        "als": lambda rows: fitted.als.user_factors[rows] @ fitted.als.item_factors.T,
    }
    reference_settings = settings.replace(**model.REFERENCE_RECIPE)
    reference_data = model.interactions(ratings, win.keep, win.user_ids, win.movie_ids, reference_settings)
    reference = model.fit(reference_data.confidence, reference_settings)
    scorers["reference"] = lambda rows: reference.user_factors[rows] @ reference.item_factors.T
    if als_factors is not None:  # the same night without the content step
        without = dataclasses.replace(
            fitted, als=model.from_factors(fitted.als.user_factors, als_factors, settings), content_rows=None
        )
        scorers["no_content"] = lambda rows: without.scores(rows, chosen_data, chosen)
    for name, since in (("popularity", -np.inf), ("recent_popularity", cutoff - recent_days * DAY)):
        counts = temporal.popularity_scores(ratings, win, settings, since).astype(np.float64)
        scorers[name] = lambda rows, c=counts: np.tile(c, (len(rows), 1))
    ease = peers.fit_ease(data.positives, ease_lambda) if ease_lambda is not None else None
    if ease is not None:
        scorers["ease"] = lambda rows: ease.scores(data.positives, rows)
    if peers_too:
        knn = peers.fit_item_knn(data.positives)
        scorers["item_knn"] = lambda rows: knn.scores(data.positives, rows)
    with threadpool_limits(limits=1, user_api="blas"):
        per_user = {name: temporal.score_top(scorer, win, data.seen) for name, scorer in scorers.items()}
    for name in MODELS:  # a peer that could not be fitted (EASE on a large catalogue): no figures
        per_user.setdefault(name, np.full((len(win.test_user_ids), len(METRICS)), np.nan))
    refresh = (
        refresh_replay(ratings, win, chosen_data, fitted, settings, chosen, refresh_days) if refresh_days > 0 else None
    )
    return win.test_user_ids, per_user, choice, refresh


def backtest(
    settings: Settings,
    output_dir: Path | None = None,
    nights: int = 48,
    window_days: float = 30.0,
    recent_days: float = 30.0,
    run_id: str | None = None,
    period: tuple[float, float] = (0.75, 1.0),
    peers_too: bool = True,
    refresh_days: float = 1.0,
    new_movies_days: float = 60.0,
) -> BacktestResult:
    """Replay nightly runs over the last part of --data-dir's timeline: fit on the ratings before
    each night, score the positives of the following --window-days, against popularity, recent
    popularity, the reference recipe and ALS alone; and replay a refresh between nights (the
    users' ratings of the first --refresh-days folded in, scored on their later ones); and replay
    the movies first rated in the `new_movies_days` before each night as unrated (0: off). Write
    metrics.json and report.md (and the run's run_metrics with --run-id). Publishes nothing."""
    started = time.perf_counter()
    bad_period = not 0 <= period[0] < period[1] <= 1
    bad_days = not refresh_days >= 0 or not new_movies_days >= 0
    if nights < 1 or window_days <= 0 or recent_days <= 0 or bad_period or bad_days:
        from ..errors import ConfigError

        raise ConfigError(
            f"backtest: nights {nights}, window {window_days} days, recent {recent_days} days, period {period}, "
            f"new movies {new_movies_days} days, refresh {refresh_days} days; expected at least 1 night, "
            "positive day counts, a period 0 <= from < to <= 1 and a refresh of 0 (off) or more days "
            "and a new-movies span of 0 (off) or more days"
        )
    catalog = read_catalog(settings.data_dir, settings.positive_threshold)
    ratings = rating_arrays(catalog)
    cutoffs = nightly_cutoffs(ratings["rated_at"], nights, window_days, period)
    output_dir = Path(output_dir or Path(settings.artifacts) / f"backtest-{runs.new_run_id()}")
    log.info("backtest: %d nights from %s, %g-day windows", len(cutoffs), _date(cutoffs[0]), window_days)

    ease_lambda = choose_ease_lambda(ratings, int(cutoffs[0]), settings, window_days) if peers_too else None
    pooled = {name: [] for name in MODELS}
    users, per_night, choices = [], [], []
    refresh_pooled, refresh_users = {name: [] for name in REFRESH_LISTS}, []
    new_pooled, new_users, new_candidates = {name: [] for name in NEW_MOVIES_LISTS}, [], []
    previous = None
    for cutoff in cutoffs:
        fresh = (
            new_movies_replay(ratings, catalog, int(cutoff), settings, window_days, new_movies_days)
            if new_movies_days > 0
            else None
        )
        if fresh is not None:
            new_users.append(fresh[0])
            new_candidates.append((_date(cutoff), fresh[1]))
            for name in NEW_MOVIES_LISTS:
                new_pooled[name].append(fresh[2][name])
            log.info("backtest %s: %d new movies, %d users", _date(cutoff), fresh[1], len(fresh[0]))
        night = one_night(
            ratings,
            int(cutoff),
            settings,
            window_days,
            recent_days,
            previous,
            ease_lambda,
            peers_too,
            refresh_days,
            catalog,
        )
        if night is None:
            continue
        test_users, per_user, choice, refresh = night
        if choice.source == "chosen":
            previous = choice.record()
        users.append(test_users)
        for name in MODELS:
            pooled[name].append(per_user[name])
        if refresh is not None:
            refresh_users.append(refresh[0])
            for name in REFRESH_LISTS:
                refresh_pooled[name].append(refresh[1][name])
        per_night.append((_date(cutoff), len(test_users), {n: per_user[n].mean(axis=0) for n in MODELS}))
        choices.append((_date(cutoff), *(choice.weights[w] for w in blend_choice.CHOSEN), choice.source))
        log.info(
            "backtest %s: %d users, trend_weight %g (%s), Recall@10 %s; refresh %d user-days",
            _date(cutoff),
            len(test_users),
            choice.weights["trend_weight"],
            choice.source,
            " ".join(f"{n} {per_user[n][:, 0].mean():.3f}" for n in MODELS),
            0 if refresh is None else len(refresh[0]),
        )
    if not users:
        from ..errors import DataError

        raise DataError(
            f"{settings.data_dir}: no known user rated a positive within {window_days:g} days after any "
            "backtest night; expected users who come back after a night"
        )
    pooled = {name: np.vstack(values) for name, values in pooled.items()}
    pooled = {name: values for name, values in pooled.items() if not np.isnan(values).any()}
    fitted_models = [name for name in MODELS if name in pooled]
    rows = metric_rows(pooled, per_night, np.concatenate(users))
    refresh_user_ids = np.concatenate(refresh_users) if refresh_users else np.empty(0, np.int64)
    if refresh_days > 0:
        refresh_pooled = {name: np.vstack(values) for name, values in refresh_pooled.items() if values}
        rows += refresh_rows(refresh_pooled, refresh_user_ids)
    new_user_ids = np.concatenate(new_users) if new_users else np.empty(0, np.int64)
    if new_movies_days > 0:
        new_pooled = {name: np.vstack(values) for name, values in new_pooled.items() if values}
        rows += new_movies_rows(new_pooled, new_user_ids)
    values = {(m, s): v for m, s, v in rows}
    n_user_nights = len(pooled["model"])
    compared = [b for b in (*BASELINES, *PEERS) if b in pooled]
    result = BacktestResult(
        output_dir=str(output_dir),
        cutoffs=tuple(date for date, _, _ in per_night),
        n_user_nights=n_user_nights,
        n_users=len(np.unique(np.concatenate(users))),
        recall_at_10={n: values[(prefix(n) + "recall_at_10", SEGMENT)] for n in fitted_models},
        recall_at_10_ci={
            n: (
                values[(prefix(n) + "recall_at_10_ci_low", SEGMENT)],
                values[(prefix(n) + "recall_at_10_ci_high", SEGMENT)],
            )
            for n in fitted_models
        },
        ndcg_at_10={n: values[(prefix(n) + "ndcg_at_10", SEGMENT)] for n in fitted_models},
        hit_rate_at_10={n: values[(prefix(n) + "hit_rate_at_10", SEGMENT)] for n in fitted_models},
        recall_gain={
            b: tuple(values[(f"recall_at_10_gain_over_{b}{end}", SEGMENT)] for end in ("", "_ci_low", "_ci_high"))
            for b in compared
        },
        ndcg_gain={
            b: tuple(values[(f"ndcg_at_10_gain_over_{b}{end}", SEGMENT)] for end in ("", "_ci_low", "_ci_high"))
            for b in compared
        },
        choices=tuple(choices),
        ease_lambda=ease_lambda,
        refresh_days=refresh_days,
        refresh_user_days=len(refresh_user_ids),
        refresh_users=len(np.unique(refresh_user_ids)),
        **refresh_figures(values, len(refresh_user_ids)),
        seconds=round(time.perf_counter() - started, 3),
        new_movies_days=new_movies_days,
        new_movies_user_nights=len(new_user_ids),
        new_movies_users=len(np.unique(new_user_ids)),
        new_movies_candidates=tuple(new_candidates),
        **new_movies_figures(values, len(new_user_ids)),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(
        output_dir / "metrics.json",
        {
            "data_dir": str(settings.data_dir),
            "nights": nights,
            "window_days": window_days,
            "recent_days": recent_days,
            "refresh_days": refresh_days,
            "new_movies_days": new_movies_days,
            "params": settings.model_params(),
            "reference_recipe": model.REFERENCE_RECIPE,
            "ease_lambda": ease_lambda,
            "result": result.__dict__,
            "rows": [{"metric": m, "segment": s, "value": v} for m, s, v in rows],
        },
    )
    write_report(output_dir, result, per_night, window_days, recent_days)
    if run_id is not None:
        with db.transaction(settings.db) as conn:
            runs.get(conn, run_id)
            runs.upsert_metrics(conn, run_id, rows)
    log.info(
        "backtest: %d user-nights; Recall@10 model %.4f, recent popularity %.4f, popularity %.4f in %.0fs",
        n_user_nights,
        result.recall_at_10["model"],
        result.recall_at_10["recent_popularity"],
        result.recall_at_10["popularity"],
        result.seconds,
    )
    return result


def pooled_rows(
    pooled: dict[str, np.ndarray], users: np.ndarray, method: str, compared, segment: str
) -> list[tuple[str, str, float]]:
    """(metric, segment, value): each list's pooled means with intervals, then the paired gains of
    `method` over each of `compared` (users resampled whole, with all their rows)."""
    rows = []
    for name in pooled:
        for j, metric in enumerate(METRICS):
            values = pooled[name][:, j]
            low, high = bootstrap_ci(values, groups=users)
            rows += [
                (prefix(name) + metric, segment, float(values.mean())),
                (prefix(name) + metric + "_ci_low", segment, low),
                (prefix(name) + metric + "_ci_high", segment, high),
            ]
    for baseline in compared:
        for j, metric in enumerate(METRICS[:2]):
            gain = pooled[method][:, j] - pooled[baseline][:, j]
            low, high = bootstrap_ci(gain, groups=users)
            rows += [
                (f"{metric}_gain_over_{baseline}", segment, float(gain.mean())),
                (f"{metric}_gain_over_{baseline}_ci_low", segment, low),
                (f"{metric}_gain_over_{baseline}_ci_high", segment, high),
            ]
    return rows


def metric_rows(pooled: dict[str, np.ndarray], per_night, users: np.ndarray) -> list[tuple[str, str, float]]:
    """(metric, segment, value): pooled means with intervals and paired gains (users resampled
    whole, with all their nights), then per night."""
    pooled = {name: pooled[name] for name in MODELS if name in pooled}
    rows = pooled_rows(pooled, users, "model", [b for b in (*BASELINES, *PEERS) if b in pooled], SEGMENT)
    rows.append(("n_users", SEGMENT, float(len(pooled["model"]))))
    for date, n_users, means in per_night:
        rows.append(("n_users", f"{SEGMENT}:{date}", float(n_users)))
        for name in (n for n in MODELS if n in pooled):
            for j, metric in enumerate(METRICS):
                rows.append((prefix(name) + metric, f"{SEGMENT}:{date}", float(means[name][j])))
    return rows


def refresh_rows(pooled: dict[str, np.ndarray], users: np.ndarray) -> list[tuple[str, str, float]]:
    """The refresh replay's rows (segment backtest_refresh): user-days, and when there are any,
    each list's figures (night_..., night_filtered_..., refreshed_...) and the refreshed list's
    paired gains over the other two."""
    rows = [("n_user_days", REFRESH_SEGMENT, float(len(users)))]
    if len(users):
        lists = {name: pooled[name] for name in REFRESH_LISTS}
        rows += pooled_rows(lists, users, "refreshed", REFRESH_LISTS[:2], REFRESH_SEGMENT)
    return rows


def refresh_figures(values: dict, n_user_days: int) -> dict:
    """BacktestResult's refresh_* figures from the metric rows; None when no user-day qualified."""
    if not n_user_days:
        return dict.fromkeys(("refresh_recall_at_10", "refresh_recall_at_10_ci", "refresh_ndcg_at_10", "refresh_gain"))

    def value(metric):
        return values[(metric, REFRESH_SEGMENT)]

    return {
        "refresh_recall_at_10": {n: value(f"{n}_recall_at_10") for n in REFRESH_LISTS},
        "refresh_recall_at_10_ci": {
            n: (value(f"{n}_recall_at_10_ci_low"), value(f"{n}_recall_at_10_ci_high")) for n in REFRESH_LISTS
        },
        "refresh_ndcg_at_10": {n: value(f"{n}_ndcg_at_10") for n in REFRESH_LISTS},
        "refresh_gain": {
            metric: {
                b: tuple(value(f"{metric}_gain_over_{b}{end}") for end in ("", "_ci_low", "_ci_high"))
                for b in REFRESH_LISTS[:2]
            }
            for metric in METRICS[:2]
        },
    }


def ratio_ci(numerator: np.ndarray, denominator: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of mean(numerator) / mean(denominator), resampling whole users."""
    _, group = np.unique(groups, return_inverse=True)
    top, bottom = np.bincount(group, weights=numerator), np.bincount(group, weights=denominator)
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(top), size=(BOOTSTRAP_SAMPLES, len(top)))
    ratios = top[picks].sum(axis=1) / np.maximum(bottom[picks].sum(axis=1), 1e-12)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def new_movies_rows(pooled: dict[str, np.ndarray], users: np.ndarray) -> list[tuple[str, str, float]]:
    """The new-movies replay's rows (segment backtest_new_movies): user-nights, and when there are
    any, each list's Recall@10 and Recall@50 with intervals, and each content list's Recall@50 as
    a ratio of genre_popularity's (with an interval)."""
    rows = [("n_user_nights", NEW_MOVIES_SEGMENT, float(len(users)))]
    if not len(users):
        return rows
    for name in NEW_MOVIES_LISTS:
        for j, k in enumerate(NEW_MOVIES_CUTOFFS):
            values = pooled[name][:, j]
            low, high = bootstrap_ci(values, groups=users)
            metric = f"{name}_recall_at_{k}"
            rows += [
                (metric, NEW_MOVIES_SEGMENT, float(values.mean())),
                (metric + "_ci_low", NEW_MOVIES_SEGMENT, low),
                (metric + "_ci_high", NEW_MOVIES_SEGMENT, high),
            ]
    baseline = pooled["genre_popularity"][:, 1]
    for name in CONTENT_LISTS:
        ratio = pooled[name][:, 1].mean() / max(baseline.mean(), 1e-12)
        low, high = ratio_ci(pooled[name][:, 1], baseline, users)
        metric = f"{name}_recall_at_50_over_genre_popularity"
        rows += [
            (metric, NEW_MOVIES_SEGMENT, float(ratio)),
            (metric + "_ci_low", NEW_MOVIES_SEGMENT, low),
            (metric + "_ci_high", NEW_MOVIES_SEGMENT, high),
        ]
    return rows


def new_movies_figures(values: dict, n_user_nights: int) -> dict:
    """BacktestResult's new_movies_* figures from the metric rows; None when no user-night qualified."""
    names = ("new_movies_recall_at_10", "new_movies_recall_at_50", "new_movies_recall_at_50_ci", "new_movies_ratio")
    if not n_user_nights:
        return dict.fromkeys(names)

    def value(metric):
        return values[(metric, NEW_MOVIES_SEGMENT)]

    return {
        "new_movies_recall_at_10": {n: value(f"{n}_recall_at_10") for n in NEW_MOVIES_LISTS},
        "new_movies_recall_at_50": {n: value(f"{n}_recall_at_50") for n in NEW_MOVIES_LISTS},
        "new_movies_recall_at_50_ci": {
            n: (value(f"{n}_recall_at_50_ci_low"), value(f"{n}_recall_at_50_ci_high")) for n in NEW_MOVIES_LISTS
        },
        "new_movies_ratio": {
            n: tuple(value(f"{n}_recall_at_50_over_genre_popularity{end}") for end in ("", "_ci_low", "_ci_high"))
            for n in CONTENT_LISTS
        },
    }


LABELS = {
    "model": "the method (blend chosen each night)",
    "configured": "the method, configured weights",
    "als": "ALS alone",
    "reference": "reference recipe",
    "popularity": "popularity (all time)",
    "recent_popularity": "recent popularity",
    "ease": "EASE (peer)",
    "item_knn": "item-kNN cosine (peer)",
    "no_content": "the method without content scores (min_ratings_to_score 0)",
}
REFRESH_LABELS = {
    "night": "the night's list, as served",
    "night_filtered": "the night's list, the day's earlier movies left out",
    "refreshed": "refreshed: the earlier ratings folded in",
}


def refresh_section(result: BacktestResult) -> list[str]:
    """report.md's lines on the refresh replay."""
    lines = ["", "## Refresh between nights", ""]
    if result.refresh_days <= 0:
        return lines + ["Not replayed (--refresh-days 0)."]
    day = (
        "the day after each night" if result.refresh_days == 1 else f"the {result.refresh_days:g} days after each night"
    )
    if not result.refresh_user_days:
        return lines + [f"No user-day qualified: no known user rated 2 movies in {day} and liked a later one."]
    lines += [
        f"Each user known at a night who rated at least 2 movies in {day}: their earlier half of "
        "those ratings is folded into the night's model (ALS factors re-solved from their whole history, "
        "the night's item factors, item-item parts and trending part), and the lists are scored on the "
        "later half's positives. Every list leaves out the movies rated before the night. "
        f"{result.refresh_user_days} user-days of {result.refresh_users} users; 95% bootstrap intervals "
        "resampling users.",
        "",
        "| list | Recall@10 [95% CI] | NDCG@10 |",
        "|---|---|---|",
    ]
    for name in REFRESH_LISTS:
        low, high = result.refresh_recall_at_10_ci[name]
        lines.append(
            f"| {REFRESH_LABELS[name]} | {result.refresh_recall_at_10[name]:.4f} [{low:.4f}, {high:.4f}] | "
            f"{result.refresh_ndcg_at_10[name]:.4f} |"
        )
    lines += ["", "Gain of the refreshed list (paired bootstrap):", ""]
    for baseline in REFRESH_LISTS[:2]:
        gain, low, high = result.refresh_gain["recall_at_10"][baseline]
        n_gain, n_low, n_high = result.refresh_gain["ndcg_at_10"][baseline]
        lines.append(
            f"- over {REFRESH_LABELS[baseline]}: Recall@10 {gain:+.4f} [{low:+.4f}, {high:+.4f}]; "
            f"NDCG@10 {n_gain:+.4f} [{n_low:+.4f}, {n_high:+.4f}]"
        )
    return lines


NEW_MOVIES_LABELS = {
    "content_ridge": "content ridge: user factors . factors predicted from genres, year, tags",
    "content_similarity": "content similarity to the user's positives",
    "content_blend": "content blend: ridge and similarity, standardised per user, summed",
    "genre_popularity": "genre popularity (the baseline)",
    "user_genres": "genre popularity, the user's own genre shares",
    "random": "random",
}


def new_movies_section(result: BacktestResult) -> list[str]:
    """report.md's lines on the new-movies replay."""
    lines = ["", "## New movies", ""]
    if result.new_movies_days <= 0:
        return lines + ["Not replayed (new_movies_days 0)."]
    if not result.new_movies_user_nights:
        return lines + [
            f"No user-night qualified: no known user liked a movie first rated in the {result.new_movies_days:g} "
            "days before a night."
        ]
    sizes = [n for _, n in result.new_movies_candidates]
    lines += [
        f"The movies first rated in the {result.new_movies_days:g} days before each night are held out of "
        "that night's ALS fit (every rating of them); each user known to the fit who liked one of them in "
        "the window ranks the night's new movies only. "
        f"{result.new_movies_user_nights} user-nights of {result.new_movies_users} users on "
        f"{len(sizes)} nights; new movies ranked per night: median {np.median(sizes):g}, "
        f"{min(sizes)} to {max(sizes)} (Recall@50 is 1 on a night with 50 or fewer). "
        "Recall@K = hits / min(K, targets); 95% bootstrap intervals resampling users.",
        "",
        "| list | Recall@10 | Recall@50 [95% CI] |",
        "|---|---|---|",
    ]
    for name in NEW_MOVIES_LISTS:
        low, high = result.new_movies_recall_at_50_ci[name]
        lines.append(
            f"| {NEW_MOVIES_LABELS[name]} | {result.new_movies_recall_at_10[name]:.4f} | "
            f"{result.new_movies_recall_at_50[name]:.4f} [{low:.4f}, {high:.4f}] |"
        )
    lines += ["", "Recall@50 over genre popularity's (ratio, 95% CI resampling users):", ""]
    for name, (ratio, low, high) in result.new_movies_ratio.items():
        lines.append(f"- {NEW_MOVIES_LABELS[name]}: {ratio:.2f}x [{low:.2f}, {high:.2f}]")
    return lines


def write_report(output_dir: Path, result: BacktestResult, per_night, window_days: float, recent_days: float) -> Path:
    shown = list(result.recall_at_10)
    ease = f"lambda {result.ease_lambda:g}, chosen before the first night" if result.ease_lambda else "not fitted"
    lines = [
        "# Nightly backtest",
        "",
        f"{len(result.cutoffs)} nights ({result.cutoffs[0]} to {result.cutoffs[-1]}, 02:30 UTC); each user known "
        f"at a night is scored on the movies they rated >= the positive threshold in the next {window_days:g} days. "
        f"{result.n_user_nights} user-nights of {result.n_users} users. Recent popularity: positives in the "
        f"{recent_days:g} days before the night. EASE: {ease}; item-kNN: K = 100. "
        "95% bootstrap intervals resampling users, each with all their nights.",
        "",
        "| model | Recall@10 | NDCG@10 | hit rate@10 |",
        "|---|---|---|---|",
    ]
    for name in shown:
        low, high = result.recall_at_10_ci[name]
        lines.append(
            f"| {LABELS[name]} | {result.recall_at_10[name]:.4f} [{low:.4f}, {high:.4f}] | "
            f"{result.ndcg_at_10[name]:.4f} | {result.hit_rate_at_10[name]:.4f} |"
        )
    lines += ["", "Gain of the method (paired bootstrap), Recall@10 and NDCG@10:", ""]
    for baseline, (gain, low, high) in result.recall_gain.items():
        base = result.recall_at_10[baseline]
        relative = f", {gain / base:+.0%} relative" if base > 0 else ""
        n_gain, n_low, n_high = result.ndcg_gain[baseline]
        lines.append(
            f"- over {LABELS[baseline]}: {gain:+.4f} [{low:+.4f}, {high:+.4f}]{relative}; "
            f"NDCG@10 {n_gain:+.4f} [{n_low:+.4f}, {n_high:+.4f}]"
        )
    lines += refresh_section(result)
    lines += new_movies_section(result)
    lines += [
        "",
        "## Per night",
        "",
        "Recall@10 per model, and the blend each night chose from its own past (trend weight, trend days, "
        "item-item weights; source: chosen, previous or configured).",
        "",
        "| night | users | " + " | ".join(LABELS[n] for n in shown) + " | chosen blend |",
        "|---|---|" + "---|" * (len(shown) + 1),
    ]
    for (date, n_users, means), (_, weight, days, cosine, sequence, source) in zip(
        per_night, result.choices, strict=True
    ):
        blend = f"{weight:g}, {days:g} d, {cosine:g}/{sequence:g} ({source})"
        lines.append(f"| {date} | {n_users} | " + " | ".join(f"{means[n][0]:.3f}" for n in shown) + f" | {blend} |")
    lines += ["", "![Recall@10 per night](backtest.png)"]
    plot(Path(output_dir) / "backtest.png", result, per_night)
    text = "\n".join(lines) + "\n"
    return artifacts.write_atomically(Path(output_dir) / "report.md", lambda temp: temp.write_text(text))


def plot(path: Path, result: BacktestResult, per_night) -> Path:
    """Pooled Recall@10 with intervals per model; Recall@10 per night (users as point size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True, width_ratios=(1, 2))
    shown = list(result.recall_at_10)
    values = [result.recall_at_10[n] for n in shown]
    errors = [
        [v - result.recall_at_10_ci[n][0] for v, n in zip(values, shown, strict=True)],
        [result.recall_at_10_ci[n][1] - v for v, n in zip(values, shown, strict=True)],
    ]
    left.bar(range(len(shown)), values, yerr=errors, capsize=3, color=[f"C{i}" for i in range(len(shown))])
    left.set_xticks(range(len(shown)), [n.replace("_", "\n") for n in shown], fontsize=8)
    left.set_title(f"Recall@10, {result.n_user_nights} user-nights (95% CI)")
    nights = list(range(len(per_night)))
    sizes = [6 + 2 * n_users for _, n_users, _ in per_night]
    for i, name in enumerate(shown):
        right.plot(nights, [means[name][0] for _, _, means in per_night], color=f"C{i}", alpha=0.6, label=LABELS[name])
        right.scatter(nights, [means[name][0] for _, _, means in per_night], s=sizes, color=f"C{i}", alpha=0.6)
    step = max(1, len(per_night) // 8)
    right.set_xticks(nights[::step], [date for date, _, _ in per_night][::step], fontsize=8)
    right.set_title("Recall@10 per night (point size: users)")
    right.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _date(timestamp) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).date().isoformat()
