"""The diversity knob's price on the nightly backtest: a table an operator can pick a setting from.

Replays `recjobs backtest`'s nights (recjobs.jobs.backtest: the same cutoffs, windows, fit and
blend choice as its "model" list): each night fits the method once on the ratings before it,
takes each test user's best CANDIDATES * 10 unrated movies (Fitted.recommend with the night's
chosen blend), and for every diversity setting re-ranks them to 10 with
recjobs.method.diversity.rerank (MMR over the cosine of the ALS item factors). Each list is
scored on the positives of the window after the night (Recall@10, NDCG@10, as the backtest
does), and measured: intra-list diversity (mean 1 - cosine of the ALS item factors over the
list's pairs) and genres per list (distinct MovieLens genres of its 10 movies). Setting 0 is the
list the backtest scores as "model". Pooled over user-nights with 95% bootstrap intervals that
resample users whole; then each setting's paired gains over 0.

    .venv/bin/python tests/benchmarks/choose_diversity.py --data-dir data_small
    .venv/bin/python tests/benchmarks/choose_diversity.py --data-dir /tmp/syn42r --nights 24 --window-days 14
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from recjobs.evaluation import temporal  # noqa: E402
from recjobs.evaluation.metrics import CUTOFF, bootstrap_ci  # noqa: E402
from recjobs.jobs.backtest import fit_night, nightly_cutoffs, rating_arrays, read_catalog  # noqa: E402
from recjobs.method import diversity  # noqa: E402
from recjobs.settings import Settings  # noqa: E402

COLUMNS = ("recall", "ndcg", "ild", "genres")  # per user-night, per setting


def one_night(ratings: dict, catalog, cutoff: int, settings: Settings, window_days: float, settings_grid, previous):
    """(test user ids, setting -> users x COLUMNS, the night's blend choice) or None when no user
    qualifies. The night is the backtest's, content scores and all."""
    night = fit_night(ratings, cutoff, settings, window_days, previous, catalog)
    movies = catalog.movies.set_index("movie_id")["genres"]
    if night is None:
        return None
    win, _, fitted, choice, chosen, chosen_data, _ = night
    candidates, scores = fitted.recommend(win.rows, chosen_data, diversity.CANDIDATES * CUTOFF, chosen)
    vectors = fitted.als.item_factors
    genres = diversity.genre_matrix(diversity.genre_sets(movies.reindex(win.movie_ids).fillna("")))
    out = {}
    for setting in settings_grid:
        top, _ = diversity.rerank(candidates, scores, vectors, setting, CUTOFF)
        metrics = temporal.list_metrics(top, win.targets)
        out[setting] = np.column_stack(
            [metrics[:, 0], metrics[:, 1], diversity.list_diversity(top, vectors), diversity.list_genres(top, genres)]
        )
    return win.test_user_ids, out, choice


def interval(values: np.ndarray, users: np.ndarray) -> str:
    kept = ~np.isnan(values)
    low, high = bootstrap_ci(values[kept], groups=users[kept])
    return f"{values[kept].mean():+.4f} [{low:+.4f}, {high:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a MovieLens-layout folder")
    parser.add_argument("--nights", type=int, default=48)
    parser.add_argument("--window-days", type=float, default=30.0)
    parser.add_argument("--period", default="0.75,1", help="share of the ratings made: from,to")
    parser.add_argument("--settings", default="0,0.1,0.2,0.3,0.5", help="diversity settings, 0 first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    grid = tuple(diversity.check_diversity(float(s)) for s in args.settings.split(","))
    if 0.0 not in grid:
        grid = (0.0, *grid)
    started = time.perf_counter()
    settings = Settings(data_dir=args.data_dir)
    catalog = read_catalog(settings.data_dir, settings.positive_threshold)
    ratings = rating_arrays(catalog)
    movies = catalog.movies.set_index("movie_id")["genres"]
    period = tuple(float(p) for p in args.period.split(","))
    cutoffs = nightly_cutoffs(ratings["rated_at"], args.nights, args.window_days, period)
    pooled = {setting: [] for setting in grid}
    users, previous = [], None
    for cutoff in cutoffs:
        night = one_night(ratings, catalog, int(cutoff), settings, args.window_days, grid, previous)
        if night is None:
            continue
        test_users, per_setting, choice = night
        if choice.source == "chosen":
            previous = choice.record()
        users.append(test_users)
        for setting in grid:
            pooled[setting].append(per_setting[setting])
    users = np.concatenate(users)
    pooled = {setting: np.vstack(values) for setting, values in pooled.items()}
    seconds = time.perf_counter() - started
    n_genres = len(set().union(*diversity.genre_sets(movies)))
    print(
        f"{args.data_dir}: {len(cutoffs)} nights, {args.window_days:g}-day windows, period {args.period}; "
        f"{len(users)} user-nights of {len(np.unique(users))} users; re-ranking the top "
        f"{diversity.CANDIDATES * CUTOFF} to {CUTOFF}; {n_genres} genres in the catalogue; bootstrap seed 0; "
        f"{seconds:.0f} s\n"
    )
    print("| diversity | Recall@10 [95% CI] | NDCG@10 | ILD | genres per list |")
    print("|---|---|---|---|---|")
    for setting, values in pooled.items():
        low, high = bootstrap_ci(values[:, 0], groups=users)
        ild = np.nanmean(values[:, 2])
        print(
            f"| {setting:g} | {values[:, 0].mean():.4f} [{low:.4f}, {high:.4f}] | {values[:, 1].mean():.4f} | "
            f"{ild:.3f} | {values[:, 3].mean():.2f} |"
        )
    print("\nPaired gains over diversity 0 (95% bootstrap intervals, users resampled whole):\n")
    print("| diversity | Recall@10 | NDCG@10 | ILD | genres per list |")
    print("|---|---|---|---|---|")
    base = pooled[0.0]
    for setting, values in pooled.items():
        if setting == 0.0:
            continue
        gains = [interval(values[:, j] - base[:, j], users) for j in range(len(COLUMNS))]
        print(f"| {setting:g} | " + " | ".join(gains) + " |")


if __name__ == "__main__":
    main()
