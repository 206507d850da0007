"""The forward metric: how the run readers were served did on the ratings that arrived after
its data. Each nightly run measures it for the run it is about to replace (the production
number the backtest stands in for), with popularity and recent popularity at that run's data
horizon on the same users.

Targets: each user's positives rated after the served run's newest rating, of movies that run
knew; every movie the user had rated by then is filtered from the baselines' lists (the
served lists already leave them out). Recall@10 = hits / min(10, targets).
"""

from __future__ import annotations

import numpy as np

from ..method import model
from ..settings import Settings
from ..storage import db
from .metrics import CUTOFF, recall_ndcg_of_items

DAY = 86_400
RECENT_DAYS = 30  # recent popularity: positives in the 30 days before the served run's newest rating
SEGMENT = "forward"  # run_metrics segment: forward:<served run id>


def data_until(ratings: dict) -> float:
    """The newest rating's time: a run's data horizon (stored per run as metric data_until)."""
    return float(ratings["rated_at"].max())


def forward_metrics(conn, run_id: str, ratings: dict, settings: Settings) -> list[tuple[str, str, float]]:
    """(metric, segment, value) rows of the served run on this run's newer ratings; [] when no
    other run is served, its horizon is unknown, or nobody it served rated anything since."""
    served = conn.execute(db.query("freshness.served_run")).mappings().first()
    if served is None or served["run_id"] == run_id or served["data_until"] is None:
        return []
    until = served["data_until"]
    lists: dict[int, list[int]] = {}
    for user, movie in conn.execute(db.query("freshness.top_lists"), {"run_id": served["run_id"], "cutoff": CUTOFF}):
        lists.setdefault(user, []).append(movie)
    old = ratings["rated_at"] <= until
    known_movies = np.unique(ratings["movie_id"][old])
    positive = ratings["rating"] >= settings.positive_threshold
    new = ~old & positive & np.isin(ratings["user_id"], list(lists)) & np.isin(ratings["movie_id"], known_movies)
    if not new.any():
        return []
    targets: dict[int, set[int]] = {}
    for user, movie in zip(ratings["user_id"][new].tolist(), ratings["movie_id"][new].tolist(), strict=True):
        targets.setdefault(user, set()).add(movie)
    users = np.array(sorted(targets))

    user_ids = np.unique(np.concatenate([ratings["user_id"][old], users]))
    seen = model.matrix(
        model.index(ratings["user_id"][old], user_ids),
        model.index(ratings["movie_id"][old], known_movies),
        np.ones(int(old.sum()), np.float32),
        (len(user_ids), len(known_movies)),
    )
    rows = model.index(users, user_ids)
    tops = {"": [lists[u] for u in users.tolist()]}
    for name, since in (("popularity_", -np.inf), ("recent_popularity_", until - RECENT_DAYS * DAY)):
        counted = old & positive & (ratings["rated_at"] > since)
        counts = np.bincount(model.index(ratings["movie_id"][counted], known_movies), minlength=len(known_movies))
        popular = model.popularity_model(counts.astype(np.float32), len(user_ids), settings)
        top = model.top_n(popular, rows, seen, CUTOFF)[0]
        tops[name] = [known_movies[row[row >= 0]] for row in top]

    segment = f"{SEGMENT}:{served['run_id']}"
    out = [("forward_n_users", segment, float(len(users)))]
    for prefix, top_lists in tops.items():
        values = np.array(
            [recall_ndcg_of_items(top, targets[u]) for top, u in zip(top_lists, users.tolist(), strict=True)]
        )
        out += [
            (f"forward_{prefix}recall_at_10", segment, float(values[:, 0].mean())),
            (f"forward_{prefix}ndcg_at_10", segment, float(values[:, 1].mean())),
        ]
    return out
