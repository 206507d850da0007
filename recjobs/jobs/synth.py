"""synth: a MovieLens-layout data set of any size (movies, ratings, links, tags), for scale work.

What makes it worth measuring on, not only big:
- long tails: movie popularity is Zipf-like and user activity Pareto-like, with at least
  MIN_RATINGS_PER_USER ratings per user, as MovieLens;
- taste: every movie and user belongs to one of N_TASTES taste groups; TASTE_SHARE of a user's
  picks come from their group, and a movie of one's own group is rated higher, so a model beats
  popularity and the metrics mean something;
- sessions: movies come in short series (SERIES_LENGTH consecutive ids); a user who picks one
  often goes on to the next part in the same session, so the sequence part has something to
  learn. Sessions are spread over the user's active span, inside FIRST_DAY and `days` after it;
- time dynamics: a share of the series (`hits`) are hits, released on a day of the timeline;
  most of a hit's ratings come in the weeks after its release (an exponential delay, mean
  HIT_MEAN_DELAY_DAYS), from the users active then, so its popularity rises and fades and
  "trending" predicts what is rated next. A hit's rating swaps movies with another rating made
  near the time it is moved to, so every user keeps their number of ratings.

Deterministic for a seed. Numpy only, vectorised: no per-user Python.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

MIN_RATINGS_PER_USER = 20
N_TASTES = 40
POPULARITY_EXPONENT = 1.3  # Zipf-like; the top 10% of movies get about 60% of ratings, as ml-latest-small
TASTE_SHARE = 0.7
SERIES_LENGTH = 4
NEXT_PART_SHARE = 0.5  # chance a pick is followed by the series' next part
SESSION_RATINGS = 12  # mean ratings per session
FIRST_DAY, LAST_DAY = 820_454_400, 1_696_118_400  # 1996-01-01 .. 2023-10-01, UTC
TAG_SHARE = 0.01
HIT_SHARE = 0.1  # the default share of series that are hits
HIT_BOOST = 8.0  # a hit is this many times as popular as its rank alone makes it
HIT_MEAN_DELAY_DAYS = 21.0
FULL_TIMELINE_DAYS = (LAST_DAY - FIRST_DAY) // 86_400
GENRES = (
    "Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy Film-Noir Horror IMAX "
    "Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


@dataclass(frozen=True)
class SynthResult:
    out_dir: str
    n_users: int
    n_movies: int
    n_ratings: int
    n_tags: int
    seconds: float


def check_sizes(users: int, movies: int, ratings: int) -> None:
    if users < 1 or movies < 1:
        raise ConfigError(f"synth: {users} users and {movies} movies; expected at least 1 of each")
    if movies < 2 * MIN_RATINGS_PER_USER:
        raise ConfigError(
            f"synth: {movies} movies; expected at least {2 * MIN_RATINGS_PER_USER} "
            f"(every user rates {MIN_RATINGS_PER_USER} distinct movies)"
        )
    if ratings < MIN_RATINGS_PER_USER * users:
        raise ConfigError(
            f"synth: {ratings} ratings for {users} users; expected at least {MIN_RATINGS_PER_USER * users} "
            f"({MIN_RATINGS_PER_USER} per user, as MovieLens)"
        )
    if ratings > users * movies // 4:
        raise ConfigError(
            f"synth: {ratings} ratings for {users} users and {movies} movies; expected at most "
            f"{users * movies // 4} (a quarter of all pairs), or more users or movies"
        )


def ratings_per_user(rng: np.random.Generator, users: int, movies: int, ratings: int) -> np.ndarray:
    """Pareto-tailed counts, each at least MIN_RATINGS_PER_USER and at most a quarter of the
    movies, summing to `ratings`."""
    cap = max(MIN_RATINGS_PER_USER, movies // 4)
    weight = rng.pareto(1.3, users)

    def total(scale: float) -> float:
        return np.minimum(MIN_RATINGS_PER_USER + weight * scale, cap).sum()

    low, high = 0.0, 1.0
    while total(high) < ratings and high < 1e12:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if total(middle) < ratings else (low, middle)
    exact = np.minimum(MIN_RATINGS_PER_USER + weight * high, cap)
    counts = np.floor(exact).astype(np.int64)
    short = int(ratings - counts.sum())
    if short > 0:  # the fractions: one more for the users closest to the next whole rating
        room = np.flatnonzero(counts < cap)
        order = room[np.argsort(-(exact[room] - counts[room]), kind="stable")]
        counts[order[:short]] += 1
    return counts


def movie_weights(rng: np.random.Generator, movies: int) -> tuple[np.ndarray, np.ndarray]:
    """(popularity weight, taste group) per movie index. A series (SERIES_LENGTH consecutive
    indexes) shares a group and a Zipf-like popularity; later parts are a little less popular."""
    series = np.arange(movies) // SERIES_LENGTH
    n_series = int(series[-1]) + 1
    rank = rng.permutation(n_series)
    part = np.arange(movies) % SERIES_LENGTH
    weight = (1.0 / (rank[series] + 5.0) ** POPULARITY_EXPONENT) * 0.8**part
    return weight, rng.integers(0, N_TASTES, n_series)[series]


def hit_releases(rng: np.random.Generator, movies: int, share: float, first: int, last: int) -> np.ndarray:
    """Per movie index, the release time of its series when it is a hit, else -1."""
    series = np.arange(movies) // SERIES_LENGTH
    n_series = int(series[-1]) + 1
    hit = rng.random(n_series) < share
    margin = min(30 * 86_400, (last - first) // 4)
    release = rng.integers(first + margin, max(first + margin + 1, last - margin), n_series)
    return np.where(hit, release, -1)[series]


def retime_hits(rng, users, picks, rated_at, release, movies: int, rounds: int = 6):
    """Move each hit rating to about its release plus an exponential delay, by swapping movies
    with a rating made near that time (one of the nearest few, more each round) that is not a
    hit and not yet swapped; a swap that would give a user a movie twice is not made. Returns
    the new picks."""
    picks = picks.copy()
    waiting = np.flatnonzero(release[picks] >= 0)
    free = np.flatnonzero(release[picks] < 0)
    free = free[np.argsort(rated_at[free], kind="stable")]
    keys = np.sort(users.astype(np.int64) * movies + picks)
    spread = 20
    for _ in range(rounds):
        if len(waiting) == 0 or len(free) == 0:
            break
        wanted = release[picks[waiting]] + rng.exponential(HIT_MEAN_DELAY_DAYS * 86_400, len(waiting)).astype(np.int64)
        at = np.searchsorted(rated_at[free], wanted) + rng.integers(-spread, spread + 1, len(waiting))
        partner = free[np.clip(at, 0, len(free) - 1)]
        first = np.unique(partner, return_index=True)[1]  # each partner once
        hits, partner = waiting[first], partner[first]
        new_hit = users[partner].astype(np.int64) * movies + picks[hits]
        new_other = users[hits].astype(np.int64) * movies + picks[partner]
        ok = ~np.isin(new_hit, keys) & ~np.isin(new_other, keys) & (users[partner] != users[hits])
        values, counts = np.unique(np.concatenate([new_hit[ok], new_other[ok]]), return_counts=True)
        twice = values[counts > 1]
        ok &= ~np.isin(new_hit, twice) & ~np.isin(new_other, twice)
        hits, partner = hits[ok], partner[ok]
        gone = users[hits].astype(np.int64) * movies + picks[hits]
        gone = np.concatenate([gone, users[partner].astype(np.int64) * movies + picks[partner]])
        picks[hits], picks[partner] = picks[partner], picks[hits]
        keys = np.sort(np.concatenate([keys[~np.isin(keys, gone)], new_hit[ok], new_other[ok]]))
        waiting = np.setdiff1d(waiting, hits)
        free = free[~np.isin(free, np.concatenate([partner, hits]))]
        spread *= 4
    return picks


def draw_movies(rng, wanted: np.ndarray, user_taste: np.ndarray, weight, taste, tables) -> tuple:
    """`wanted[u]` picks per user (with repeats), from their taste group (TASTE_SHARE) or from
    everything, by weight: (user, movie) arrays."""
    users = np.repeat(np.arange(len(wanted)), wanted)
    picks = np.empty(len(users), np.int64)
    own = rng.random(len(users)) < TASTE_SHARE
    groups = np.where(own, user_taste[users], N_TASTES)  # N_TASTES: the whole catalogue
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(N_TASTES + 2))
    for group in range(N_TASTES + 1):
        where = order[bounds[group] : bounds[group + 1]]
        members, cumulative = tables[group]
        found = np.searchsorted(cumulative, rng.random(len(where)) * cumulative[-1], side="right")
        picks[where] = members[np.minimum(found, len(members) - 1)]
    return users, picks


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is much slower on tens of millions)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal digits of non-negative integers as a right-aligned uint8 matrix, and where each
    number's digits are (no leading zeros; 0 is one digit)."""
    kind = np.uint32 if int(np.max(values, initial=0)) < 2**32 else np.int64  # faster division
    values = np.asarray(values).astype(kind)
    width = max(1, len(str(int(values.max(initial=0)))))
    powers = (10 ** np.arange(width - 1, -1, -1, dtype=np.int64)).astype(kind)
    matrix = (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)
    shown = (values[:, None] >= powers) | (np.arange(width) == width - 1)
    return matrix, shown


def write_ratings_csv(path: Path, users, movies, stars, rated_at, block: int = 1_000_000) -> None:
    """ratings.csv, built as bytes with numpy in blocks of rows (pandas' writer formats one
    value at a time: minutes at 25M rows). Appears whole."""
    partial = path.with_name(f".{path.name}.partial")
    tenths = np.round(np.asarray(stars) * 10).astype(np.int64)
    with open(partial, "wb") as out:
        out.write(b"userId,movieId,rating,timestamp\n")
        for start in range(0, len(users), block):
            part = slice(start, start + block)
            n = len(users[part])
            pieces = []
            for column in (users[part], movies[part]):
                matrix, shown = digits(column)
                pieces += [(matrix, shown), (np.full((n, 1), ord(","), np.uint8), np.ones((n, 1), bool))]
            star = np.stack([tenths[part] // 10 + ord("0"), np.full(n, ord(".")), tenths[part] % 10 + ord("0")], 1)
            pieces += [(star.astype(np.uint8), np.ones((n, 3), bool))]
            pieces += [(np.full((n, 1), ord(","), np.uint8), np.ones((n, 1), bool)), digits(rated_at[part])]
            pieces += [(np.full((n, 1), ord("\n"), np.uint8), np.ones((n, 1), bool))]
            text = np.hstack([p[0] for p in pieces])
            out.write(text[np.hstack([p[1] for p in pieces])].tobytes())
    partial.replace(path)


def at_most(rng, new: np.ndarray, movies: int, short: np.ndarray) -> np.ndarray:
    """Sorted (user, movie) keys with at most short[user] per user: a random choice among the
    users who got more."""
    user_of = new // movies
    over = (np.bincount(user_of, minlength=len(short)) > short)[user_of]
    if not over.any():
        return new
    extra, extra_users = new[over], user_of[over]
    order = np.argsort(extra_users << 24 | rng.integers(0, 2**24, len(extra)))
    extra, extra_users = extra[order], extra_users[order]
    rank = np.arange(len(extra)) - np.searchsorted(extra_users, extra_users)
    return np.sort(np.concatenate([new[~over], extra[rank < short[extra_users]]]))


def pick_movies(rng, counts: np.ndarray, user_taste: np.ndarray, weight, taste) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, movie) pairs, counts[u] per user: picks, each followed by the next part of
    its series with NEXT_PART_SHARE, then rounds of new picks for users still short (after ten
    rounds, from the whole catalogue evenly, so the heaviest users fill up too)."""
    movies = len(weight)
    tables = []
    for group in range(N_TASTES + 1):
        members = np.flatnonzero(taste == group) if group < N_TASTES else np.arange(movies)
        if len(members) == 0:
            members = np.arange(movies)
        tables.append((members, np.cumsum(weight[members])))
    keys = np.empty(0, np.int64)
    have = np.zeros(len(counts), np.int64)
    for round_number in range(100):
        short = counts - have
        if not short.any():
            break
        first = np.ceil(short / (1 + NEXT_PART_SHARE)).astype(np.int64) * (short > 0)
        if round_number < 10:
            users, picks = draw_movies(rng, first, user_taste, weight, taste, tables)
        else:  # the last few picks of the heaviest users: any movie not yet theirs
            users = np.repeat(np.arange(len(first)), first)
            picks = rng.integers(0, movies, len(users))
        follow = (rng.random(len(picks)) < NEXT_PART_SHARE) & (picks % SERIES_LENGTH < SERIES_LENGTH - 1)
        follow &= picks + 1 < movies
        users = np.concatenate([users, users[follow]])
        picks = np.concatenate([picks, picks[follow] + 1])
        new = sorted_unique(users * movies + picks)
        if len(keys):  # not already theirs (keys is sorted)
            found = keys[np.minimum(np.searchsorted(keys, new), len(keys) - 1)] == new
            new = new[~found]
        new = at_most(rng, new, movies, short)
        keys = np.sort(np.concatenate([keys, new]), kind="stable")  # two sorted runs: merged
        have += np.bincount(new // movies, minlength=len(counts))
    return keys // movies, keys % movies


def rating_values(rng, users, picks, user_taste, taste) -> np.ndarray:
    """Half-star ratings: higher for one's own taste group and for a movie's quality."""
    quality = rng.normal(0.0, 0.5, int(picks.max()) + 1)
    bias = rng.normal(0.0, 0.35, int(users.max()) + 1)
    liking = 3.1 + 0.9 * (taste[picks] == user_taste[users]) + quality[picks] + bias[users]
    stars = np.round((liking + rng.normal(0.0, 0.7, len(picks))) * 2) / 2
    return np.clip(stars, 0.5, 5.0)


def timestamps(rng, users, picks, n_users: int, last_day: int = LAST_DAY) -> np.ndarray:
    """Sessions over each user's active span, the parts of a series together and in order inside
    a session. Rows must be sorted by (user, movie), as pick_movies returns them."""
    start = rng.integers(FIRST_DAY, last_day - 86_400, n_users)
    span = np.minimum(np.exp(rng.normal(np.log(60 * 86_400), 1.5, n_users)), last_day - start).astype(np.int64)
    n_sessions = np.maximum(1, np.round(np.bincount(users, minlength=n_users) / SESSION_RATINGS)).astype(np.int64)
    series = picks // SERIES_LENGTH
    new_series = np.r_[True, (users[1:] != users[:-1]) | (series[1:] != series[:-1])]
    group = np.cumsum(new_series) - 1  # one id per (user, series): one session, a random place in it
    session = (rng.random(group[-1] + 1)[group] * n_sessions[users]).astype(np.int64)
    # order by (user, session, place, part) through one int64 key: one argsort, not a lexsort
    user_bits, session_bits = int(n_users).bit_length(), int(n_sessions.max()).bit_length()
    part_bits = (SERIES_LENGTH - 1).bit_length()
    place_bits = min(24, 62 - user_bits - session_bits - part_bits)
    place = rng.integers(0, 2**place_bits, group[-1] + 1)[group]
    key = ((users << session_bits | session) << place_bits | place) << part_bits | picks % SERIES_LENGTH
    order = np.argsort(key, kind="stable")
    ranked = np.r_[True, (users[order][1:] != users[order][:-1]) | (session[order][1:] != session[order][:-1])]
    first = np.maximum.accumulate(np.where(ranked, np.arange(len(picks)), 0))
    elapsed = np.cumsum(rng.integers(30, 600, len(picks)))  # 0.5 to 10 minutes between ratings
    offset = np.empty(len(picks), np.int64)
    offset[order] = elapsed - elapsed[first]
    session_start = start[users] + session * span[users] // n_sessions[users]
    return np.minimum(session_start + offset, last_day)


def synth(
    users: int,
    movies: int,
    ratings: int,
    seed: int,
    out_dir: Path,
    hits: float = HIT_SHARE,
    days: int = FULL_TIMELINE_DAYS,
) -> SynthResult:
    """Write movies.csv, ratings.csv, links.csv and tags.csv of a synthetic MovieLens-layout set
    to out_dir (each file appears whole). `hits`: the share of series that are hits (0: no time
    dynamics); `days`: the timeline's length from 1996-01-01."""
    import pandas as pd

    started = time.perf_counter()
    check_sizes(users, movies, ratings)
    if not 0 <= hits <= 1 or not 30 <= days <= FULL_TIMELINE_DAYS:
        raise ConfigError(
            f"synth: hits {hits}, days {days}; expected hits from 0 to 1 and days from 30 to {FULL_TIMELINE_DAYS}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    last_day = FIRST_DAY + int(days) * 86_400
    weight, taste = movie_weights(rng, movies)
    release = hit_releases(rng, movies, hits, FIRST_DAY, last_day)
    weight = np.where(release >= 0, weight * HIT_BOOST, weight)
    user_taste = rng.integers(0, N_TASTES, users)
    counts = ratings_per_user(rng, users, movies, ratings)
    user_index, picks = pick_movies(rng, counts, user_taste, weight, taste)
    rated_at = timestamps(rng, user_index, picks, users, last_day)
    picks = retime_hits(rng, user_index, picks, rated_at, release, movies)
    order = np.lexsort((picks, user_index))  # back in (user, movie) order
    user_index, picks, rated_at = user_index[order], picks[order], rated_at[order]
    stars = rating_values(rng, user_index, picks, user_taste, taste)
    log.info("synth: %d ratings drawn in %.1fs", len(picks), time.perf_counter() - started)

    movie_ids = np.arange(1, movies + 1)
    years = 1920 + (np.arange(movies) // SERIES_LENGTH * 7919 % 100)
    primary = np.array(GENRES)[taste % len(GENRES)]
    secondary = np.array(GENRES)[(taste * 7 + 3) % len(GENRES)]
    titles = pd.Series([f"Synthetic Movie {i}" for i in movie_ids]) + " (" + pd.Series(years).astype(str) + ")"
    genres = pd.Series(primary) + "|" + pd.Series(secondary)
    frames = {
        "movies.csv": pd.DataFrame({"movieId": movie_ids, "title": titles, "genres": genres}),
        "links.csv": pd.DataFrame(
            {"movieId": movie_ids, "imdbId": [f"{i + 100000:07d}" for i in movie_ids], "tmdbId": movie_ids + 500}
        ),
    }
    tagged = rng.random(len(picks)) < TAG_SHARE
    frames["tags.csv"] = pd.DataFrame(
        {
            "userId": user_index[tagged] + 1,
            "movieId": picks[tagged] + 1,
            "tag": primary[picks[tagged]],
            "timestamp": rated_at[tagged],
        }
    )
    for name, frame in frames.items():
        partial = out_dir / f".{name}.partial"
        frame.to_csv(partial, index=False)
        partial.replace(out_dir / name)
    write_ratings_csv(out_dir / "ratings.csv", user_index + 1, picks + 1, stars, rated_at)
    result = SynthResult(
        str(out_dir), users, movies, len(picks), int(tagged.sum()), round(time.perf_counter() - started, 3)
    )
    log.info(
        "synth: %d users, %d movies, %d ratings, %d tags in %s in %.1fs",
        users,
        movies,
        result.n_ratings,
        result.n_tags,
        out_dir,
        result.seconds,
    )
    return result
