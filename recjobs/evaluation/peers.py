"""Peers the backtest fits beside the method on the same nights: what a user would pick instead.

- EASE (Steck 2019): the closed-form item-item model B = I - P / diag(P), P = (X'X + lambda I)^-1,
  on the binary positives; a dense items x items matrix, so only where the catalogue fits
  (EASE_MAX_ITEMS movies with positives).
- item-kNN: implicit's CosineRecommender (K nearest neighbours by cosine of the positives),
  scored as the sum of the user's positives' neighbour similarities.

Both return dense users x items scores for rows of the fit's users, so the backtest ranks and
filters them as it does the method.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

EASE_MAX_ITEMS = 20_000  # 20,000^2 float64 is 3.2 GB for the Gram matrix and as much for its inverse
EASE_LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
KNN_NEIGHBOURS = 100


@dataclass(frozen=True)
class Ease:
    items: np.ndarray  # the item columns it scores (those with a positive)
    weights: np.ndarray  # len(items) x len(items)
    n_items: int

    def scores(self, positives: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        out = np.full((len(rows), self.n_items), -1e9)  # movies with no positive: last
        out[:, self.items] = positives[rows][:, self.items] @ self.weights
        return out


def fit_ease(positives: sp.csr_matrix, lam: float) -> Ease | None:
    """EASE on the binary positives (users x items); None when too many items have positives."""
    items = np.flatnonzero(np.diff(positives.tocsc().indptr) > 0)
    if len(items) > EASE_MAX_ITEMS or len(items) == 0:
        return None
    x = positives[:, items].astype(np.float64)
    x.data[:] = 1.0
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += lam
    with threadpool_limits(limits=os.cpu_count(), user_api="blas"):  # the one dense solve: every core
        inverse = _spd_inverse(gram)
    weights = inverse / -np.diag(inverse)
    weights[np.diag_indices_from(weights)] = 0.0
    return Ease(items, weights, positives.shape[1])


def _spd_inverse(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix through its Cholesky factor (LAPACK
    potrf and potri: about a third of a general inverse's work), overwriting `matrix`."""
    from scipy.linalg import lapack

    factor, info = lapack.dpotrf(matrix, lower=False, overwrite_a=True)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: the regularized Gram matrix is not positive definite (LAPACK {info})")
    upper = np.triu(inverse)
    return upper + np.triu(inverse, 1).T


@dataclass(frozen=True)
class ItemKnn:
    similarity: sp.csr_matrix  # items x items

    def scores(self, positives: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        return np.asarray((positives[rows] @ self.similarity).todense(), dtype=np.float64)


def fit_item_knn(positives: sp.csr_matrix, neighbours: int = KNN_NEIGHBOURS) -> ItemKnn:
    from implicit.nearest_neighbours import CosineRecommender

    knn = CosineRecommender(K=neighbours)
    with warnings.catch_warnings():  # its own normalisation hands its fit a COO matrix
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        knn.fit(positives.astype(np.float64).tocsr(), show_progress=False)
    return ItemKnn(knn.similarity.tocsr())
