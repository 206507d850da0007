"""Ranking metrics and their intervals, shared by evaluate, tune, the cold-start evaluation
and the report. Numpy only.

Two kinds of target:
- one held-out item per user (leave-last-out): `per_user_metrics` from the hit position;
- several later items per user (cold start): `recall_ndcg_of_items`, recall over
  min(CUTOFF, number of targets).
"""

from __future__ import annotations

import numpy as np

CUTOFF = 10
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
# the models `evaluate` scores side by side (the backtest adds its own baselines)
MODELS = ("model", "reference", "popularity", "recent_popularity")  # reference: full nights only


def prefix(model: str) -> str:
    """The prefix of a model's metric names: none for the method, '<model>_' for a baseline."""
    return "" if model == "model" else f"{model}_"


def hit_positions(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each user's target in their top list, -1 when absent."""
    found = top == targets[:, None]
    return np.where(found.any(axis=1), found.argmax(axis=1), -1)


def per_user_metrics(top: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """recall_at_10, ndcg_at_10 and mrr_at_10 per user, one held-out item each."""
    positions = hit_positions(top[:, :CUTOFF], targets)
    hit = positions >= 0
    rank = np.maximum(positions, 0)
    return {
        "recall_at_10": hit.astype(float),
        "ndcg_at_10": np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0),
        "mrr_at_10": np.where(hit, 1.0 / (rank + 1.0), 0.0),
    }


def recall_ndcg_of_items(top_movie_ids, targets: set) -> tuple[float, float]:
    """Recall@10 (hits / min(10, |targets|)) and binary NDCG@10 of one list against a set."""
    ideal = min(CUTOFF, len(targets))
    if ideal == 0:
        return 0.0, 0.0
    hits = [i for i, movie in enumerate(top_movie_ids[:CUTOFF]) if int(movie) in targets]
    dcg = sum(1.0 / np.log2(i + 2.0) for i in hits)
    idcg = sum(1.0 / np.log2(i + 2.0) for i in range(ideal))
    return len(hits) / ideal, dcg / idcg


def bootstrap_ci(
    values: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile interval of the mean, resampling users with replacement. With `groups` (a user
    id per value, for users scored several times) whole users are resampled, all their values
    together: the interval then allows for a user's values being alike."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if groups is None:
        means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    else:
        _, group = np.unique(groups, return_inverse=True)
        sums, counts = np.bincount(group, weights=values), np.bincount(group).astype(np.float64)
        picks = rng.integers(0, len(sums), size=(samples, len(sums)))
        means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(low), float(high))
