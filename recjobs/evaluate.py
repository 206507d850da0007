"""evaluate: Recall@10 and NDCG@10 of the evaluation model on each user's test item,
against a popularity baseline computed on the same data in the same run.

Every movie a user rated before their test item is filtered, whatever its rating.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from . import db, model, runs
from .settings import Settings
from .split import TEST
from .train import read_inputs

log = logging.getLogger(__name__)

CUTOFF = 10


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    metrics_path: str
    n_users_evaluated: int
    recall_at_10: float
    ndcg_at_10: float
    popularity_recall_at_10: float
    popularity_ndcg_at_10: float
    seconds: float


def hit_positions(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each user's target in their top list, -1 when absent."""
    found = top == targets[:, None]
    return np.where(found.any(axis=1), found.argmax(axis=1), -1)


def recall_ndcg(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Recall@k and NDCG@k for one held-out item each."""
    hit = positions >= 0
    ndcg = np.where(hit, 1.0 / np.log2(np.maximum(positions, 0) + 2.0), 0.0)
    return hit.astype(float), ndcg


def popularity_model(item_counts: np.ndarray, n_users: int, settings: Settings):
    """Popularity as a one-factor model, so it runs through the same batched top-N."""
    return model.from_factors(np.ones((n_users, 1)), item_counts.reshape(-1, 1), settings)


def evaluate(settings: Settings, run_id: str) -> EvaluateResult:
    started = time.perf_counter()
    directory = runs.run_dir(settings, run_id)
    ratings, parts = read_inputs(settings, run_id)
    factors = model.Factors.read(runs.require_file(directory / "model_eval.npz", "train"))
    rows = model.index(ratings["user_id"], factors.user_ids)
    cols = model.index(ratings["movie_id"], factors.movie_ids)
    shape = (len(factors.user_ids), len(factors.movie_ids))

    before_test = parts < TEST
    seen = model.matrix(rows[before_test], cols[before_test], np.ones(before_test.sum(), np.float32), shape)
    test = parts == TEST
    test_rows, test_items = rows[test], cols[test]

    als = model.from_factors(factors.user_factors, factors.item_factors, settings)
    als_top, _ = model.top_n(als, test_rows, seen, CUTOFF)
    recall, ndcg = recall_ndcg(hit_positions(als_top, test_items))

    positive_before_test = before_test & (ratings["rating"] >= settings.positive_threshold)
    counts = np.bincount(cols[positive_before_test], minlength=shape[1]).astype(np.float32)
    pop_top, _ = model.top_n(popularity_model(counts, shape[0], settings), test_rows, seen, CUTOFF)
    pop_recall, pop_ndcg = recall_ndcg(hit_positions(pop_top, test_items))

    metrics = {
        "recall_at_10": float(recall.mean()),
        "ndcg_at_10": float(ndcg.mean()),
        "popularity_recall_at_10": float(pop_recall.mean()),
        "popularity_ndcg_at_10": float(pop_ndcg.mean()),
    }
    metrics_path = directory / "metrics.json"
    metrics_path.write_text(json.dumps({"n_users_evaluated": len(test_rows), **metrics}, indent=2))
    with db.transaction(settings.db) as conn:
        runs.update(conn, run_id, **metrics)
        for name, value in metrics.items():
            conn.execute(db.query("runs.upsert_metric"),
                         {"run_id": run_id, "metric": name, "segment": "all", "value": value})
    result = EvaluateResult(run_id=run_id, metrics_path=str(metrics_path), n_users_evaluated=len(test_rows),
                            seconds=round(time.perf_counter() - started, 3),
                            **metrics)
    runs.record_seconds(settings, run_id, "evaluate", result.seconds)
    log.info("evaluate %s: %d users, Recall@10 %.4f NDCG@10 %.4f (popularity %.4f / %.4f) in %.1fs",
             run_id, len(test_rows), metrics["recall_at_10"], metrics["ndcg_at_10"],
             metrics["popularity_recall_at_10"], metrics["popularity_ndcg_at_10"], result.seconds)
    return result
