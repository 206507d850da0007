"""The ALS model: matrices, fitting, batched top-N and the per-run model files.

implicit >= 0.5 fits on a users x items matrix (no transpose), and `recommend`
returns (ids, scores) arrays, one row per user.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from .settings import Settings

BATCH_USERS = 1024


@dataclass(frozen=True)
class Factors:
    """A fitted model as saved under artifacts/<run_id>/: ids map rows back to MovieLens ids."""
    user_ids: np.ndarray
    movie_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, user_ids=self.user_ids, movie_ids=self.movie_ids,
                 user_factors=self.user_factors, item_factors=self.item_factors)

    @classmethod
    def read(cls, path: Path) -> "Factors":
        with np.load(path) as f:
            return cls(f["user_ids"], f["movie_ids"], f["user_factors"], f["item_factors"])


def index(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row numbers of `values` in the sorted id array `ids`."""
    return np.searchsorted(ids, values)


def confidence(rating: np.ndarray, settings: Settings) -> np.ndarray:
    """1 + alpha * weight: weight 1 for positives, negative_weight below the threshold."""
    weight = np.where(rating >= settings.positive_threshold, 1.0, settings.negative_weight)
    return np.where(weight > 0, 1.0 + settings.alpha * weight, 0.0).astype(np.float32)


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


def from_factors(user_factors: np.ndarray, item_factors: np.ndarray, settings: Settings):
    model = new_als(settings)
    model.user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
    model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    return model


def top_n(model, rows: np.ndarray, exclude: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n item rows and scores for user rows, items in `exclude[row]` left out. Batched."""
    ids_out, scores_out = [], []
    n = min(n, model.item_factors.shape[0])
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(rows), BATCH_USERS):
            batch = rows[start:start + BATCH_USERS]
            ids, scores = model.recommend(batch, exclude[batch], N=n, filter_already_liked_items=True)
            ids_out.append(ids)
            scores_out.append(scores)
    return np.vstack(ids_out), np.vstack(scores_out)


def similar(model, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n most similar items (cosine of item factors) for every item, itself left out."""
    n_items = model.item_factors.shape[0]
    n = min(n, n_items - 1)
    ids_out, scores_out = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, n_items, BATCH_USERS):
            batch = np.arange(start, min(start + BATCH_USERS, n_items))
            ids, scores = model.similar_items(batch, N=n + 1)
            not_self = ids != batch[:, None]
            # keep the first n that are not the item itself (it is usually first, not always)
            order = np.argsort(~not_self, axis=1, kind="stable")[:, :n]
            ids_out.append(np.take_along_axis(ids, order, axis=1))
            scores_out.append(np.take_along_axis(scores, order, axis=1))
    return np.vstack(ids_out), np.vstack(scores_out)
