"""The method's scores and top lists, shared by every path that ranks movies: evaluate and
precompute (many users at once, recjobs.method.model.Fitted) and the cold-start job (one folded-in
user, recjobs.method.bundle). Numpy only, so the cold-start command stays light.

A movie's score for a user is the blend

    standardized(ALS score) + sum over the item-item parts of weight * standardized(part score)

each part standardized per user (mean 0, standard deviation 1).
"""

from __future__ import annotations

import numpy as np

from ..storage.artifacts import FILTERED, is_filtered  # noqa: F401  (the padding of a top list)


def standardized(scores: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Each row (the last axis) to mean 0, standard deviation 1; a constant row becomes 0.
    `overwrite`: the caller's float64 `scores` may be standardized in place (saves a copy)."""
    out = np.asarray(scores, dtype=np.float64) if overwrite else np.array(scores, dtype=np.float64)
    n = out.shape[-1]
    out -= np.add.reduce(out, axis=-1, keepdims=True) / n
    spread = np.sqrt(np.einsum("...i,...i->...", out, out) / n)[..., None]
    out /= np.where(spread > 0, spread, 1.0)
    return out


def blend(als_scores: np.ndarray, parts, standardized_parts=(), content_rows=None) -> np.ndarray:
    """The method's scores from the ALS scores and (weight, scores) of each item-item part, then
    of each part given already standardized (one a run reuses, such as its trending scores).
    With no part of positive weight the ALS scores are returned as they are (same order).
    Movies scored from their content (`content_rows`, last axis) have no item-item data: their
    standardized ALS score stands in for each item-item part."""
    parts = [(weight, scores) for weight, scores in parts if weight > 0]
    ready = [(weight, scores) for weight, scores in standardized_parts if weight > 0]
    if not parts and not ready:
        return als_scores
    total = standardized(als_scores)
    content_als = None if content_rows is None or not parts else total[..., content_rows]
    for weight, scores in parts:
        total += weight * standardized(scores)
    if content_als is not None:
        total[..., content_rows] = content_als * (1.0 + sum(weight for weight, _ in parts))
    for weight, scores in ready:
        total += weight * scores
    return total


def sparse_row_stats(part, n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of each stored entry, mean, spread) of each row of a CSR `part` (no duplicate
    entries) read as dense rows of n_cols: from its nonzeros, the rest being zeros."""
    n_rows = len(part.indptr) - 1
    lengths = np.diff(part.indptr)
    row_of = np.repeat(np.arange(n_rows), lengths)
    values = np.asarray(part.data, dtype=np.float64)
    mean = np.bincount(row_of, weights=values, minlength=n_rows) / n_cols
    deviation = values - mean[row_of]
    # the two-pass variance of the dense row: its nonzeros' squared deviations, then its zeros'
    variance = (
        np.bincount(row_of, weights=deviation * deviation, minlength=n_rows) + (n_cols - lengths) * mean**2
    ) / n_cols
    return row_of, mean, np.sqrt(variance)


def add_standardized_sparse(total: np.ndarray, weight: float, part) -> None:
    """total += weight * standardized(part as dense rows), for a CSR `part` (indptr, indices and
    data, no duplicate entries) of total's shape: a row's mean and spread come from its nonzeros
    (the rest are zeros), so only the nonzeros are touched besides one constant per row."""
    if not total.flags.c_contiguous:
        raise ValueError("add_standardized_sparse adds into a C-contiguous array only")
    n_cols = total.shape[1]
    row_of, mean, spread = sparse_row_stats(part, n_cols)
    scale = np.where(spread > 0, weight / np.where(spread > 0, spread, 1.0), 0.0)  # a constant row adds 0
    total -= (mean * scale)[:, None]
    values = np.asarray(part.data, dtype=np.float64)
    total.reshape(-1)[row_of * n_cols + part.indices] += values * scale[row_of]  # one flat index: fast


def standardized_at(values: np.ndarray, row_of: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Entries of rows whose (dense) mean and spread are known, standardized as `standardized`
    would standardize the whole rows; a constant row gives 0."""
    safe = np.where(spread > 0, spread, 1.0)
    return np.where(spread[row_of] > 0, (values - mean[row_of]) / safe[row_of], 0.0)


def dot_row_stats(user_factors: np.ndarray, item_factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of each user's dense ALS row (user_factors @ item_factors.T) without
    making it: from the items' mean factor vector and their Gram matrix."""
    users = np.asarray(user_factors, np.float64)
    items = np.asarray(item_factors, np.float64)
    n = len(items)
    mean = users @ (items.sum(axis=0) / n)
    second = np.einsum("uf,uf->u", users @ (items.T @ items / n), users)
    return mean, np.sqrt(np.maximum(second - mean * mean, 0.0))


def values_at(part, row_of: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """part[row_of[e], cols[e]] for every entry e, of a CSR `part` with sorted indices."""
    n_cols = part.shape[1]
    lengths = np.diff(part.indptr)
    keys = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths) * n_cols + part.indices
    wanted = row_of.astype(np.int64) * n_cols + cols
    at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    found = (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), bool)
    return np.where(found, np.asarray(part.data, np.float64)[at] if len(keys) else 0.0, 0.0)


def top_n_entries(row_of: np.ndarray, cols: np.ndarray, scores: np.ndarray, n_rows: int, n: int):
    """Top-n (column, score) per row from scored entries (row, column, score), best first (ties
    by column); rows with fewer entries are padded with column -1 scored FILTERED."""
    order = np.lexsort((cols, -scores, row_of))
    row_of, cols, scores = row_of[order], cols[order], scores[order]
    starts = np.searchsorted(row_of, np.arange(n_rows))
    place = np.arange(len(row_of)) - starts[row_of]
    keep = place < n
    top_cols = np.full((n_rows, n), -1, np.int64)
    top_scores = np.full((n_rows, n), FILTERED)
    top_cols[row_of[keep], place[keep]] = cols[keep]
    top_scores[row_of[keep], place[keep]] = scores[keep]
    return top_cols, top_scores


def top_n(scores: np.ndarray, exclude_rows: np.ndarray, exclude_cols: np.ndarray, n: int, overwrite: bool = False):
    """Top-n columns and scores per row of a dense users x items matrix, best first (ties by
    column), the (row, column) pairs excluded left out. Like implicit, a row with fewer than
    n movies left is padded with excluded ones scored FILTERED. `overwrite`: the caller's
    float64 `scores` may be written to (saves a copy)."""
    scores = np.asarray(scores, dtype=np.float64) if overwrite else np.array(scores, dtype=np.float64)
    scores[exclude_rows, exclude_cols] = FILTERED
    n = min(n, scores.shape[1])
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """The k best columns of one score vector, best first, `exclude` left out (no padding)."""
    scores = np.array(scores, dtype=np.float64)  # top_n for one row, without its 2-D bookkeeping
    scores[np.asarray(exclude, dtype=np.int64)] = FILTERED
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return top[~is_filtered(scores[top])]


def csr_rows_sum(matrix, n_cols: int, rows: np.ndarray, weights) -> np.ndarray:
    """sum_i weights[i] * matrix[rows[i]] for a CSR matrix given as (indptr, indices, data)."""
    indptr, indices, data = matrix
    rows = np.asarray(rows, dtype=np.int64)
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    if lengths.sum() == 0:
        return np.zeros(n_cols, dtype=np.float64)
    # every entry of the rows, row after row, summed in that order
    positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    row_weights = np.repeat(np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(rows),)), lengths)
    return np.bincount(indices[positions], weights=row_weights * data[positions], minlength=n_cols)


def trending_counts(rated_at: np.ndarray, cols: np.ndarray, positive: np.ndarray, n_items: int, days: float):
    """Positives per item column in the last `days` before the newest rating (float32): the
    trending part of the method, log1p of which is blended like an item-item part."""
    if len(rated_at) == 0:
        return np.zeros(n_items, np.float32)
    recent = positive & (rated_at >= rated_at.max() - days * 86_400)
    return np.bincount(cols[recent], minlength=n_items).astype(np.float32)
