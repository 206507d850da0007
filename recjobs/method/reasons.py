"""Why a movie is in a user's list: the movie of the user's history that contributes most to
its score (`because_movie_id`).

The blend (recjobs.method.scoring) is a sum of parts, each standardized per user, so a history
movie j's share of movie i's score is the sum of its share in each part, divided by that
part's spread for the user and times its weight:

- ALS, as implicit's `explain`: the user's factors solve x = W Σ_j c_j y_j with
  W = (YᵀY + Yᵀ(C - I)Y + λI)⁻¹, so j adds c_j · y_iᵀ W y_j to the score y_iᵀ x;
- the cosine item-item part: j adds (its recency-weighted positive weight) · sim(j, i);
- the sequence part: j adds (its weight among the user's last ratings) · seq(j, i);
- the trending part comes from no history movie.

The reason is the history movie with the largest share, when that share is positive.
Numpy only (the cold-start job uses `liked_reasons`).
"""

from __future__ import annotations

import numpy as np

from .bundle import fold_in, fold_in_system

NO_REASON = -1


def best_contributors(shares: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Per row of `shares` (listed movies x history movies): the history column whose share is
    largest, or NO_REASON when no share is positive."""
    if shares.shape[1] == 0:
        return np.full(shares.shape[0], NO_REASON, np.int64)
    best = shares.argmax(axis=1)
    return np.where(shares[np.arange(len(shares)), best] > 0, np.asarray(history)[best], NO_REASON)


def als_shares(
    item_factors: np.ndarray, gram: np.ndarray, regularization: float, history: np.ndarray, confidence: np.ndarray,
    listed: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """listed x history: c_j · y_iᵀ W y_j, W from the user's confidences (implicit's explain)."""
    a, y, c = fold_in_system(item_factors, gram, history, confidence, regularization)
    weighted = np.linalg.solve(a, (y * c[:, None]).T)  # W Σ: factors x history
    return np.asarray(item_factors[listed], np.float64) @ weighted


def part_shares(indptr, indices, data, history: np.ndarray, weights: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """listed x history: weight_j · part(j, i) of an item-item CSR part (rows: history movies)."""
    history = np.asarray(history, np.int64)
    out = np.zeros((len(listed), len(history)))
    starts, lengths = indptr[history], indptr[history + 1] - indptr[history]
    if lengths.sum() == 0:
        return out
    positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    row_of = np.repeat(np.arange(len(history)), lengths)
    cols = np.asarray(indices[positions], np.int64)
    order = np.argsort(listed)
    sorted_listed = np.asarray(listed, np.int64)[order]
    at = np.minimum(np.searchsorted(sorted_listed, cols), len(sorted_listed) - 1)
    hit = sorted_listed[at] == cols
    values = np.asarray(data[positions], np.float64) * np.asarray(weights, np.float64)[row_of]
    out[order[at[hit]], row_of[hit]] = values[hit]
    return out


def content_mask(content_rows, listed: np.ndarray) -> np.ndarray:
    """Which listed items are scored from their content (recjobs.method.content)."""
    return np.zeros(len(listed), bool) if content_rows is None else np.isin(listed, content_rows)


BATCH_USERS = 512  # users whose part spreads are computed at once (a sparse product each)


def list_reasons(fitted, data, settings, rows: np.ndarray, top_items: np.ndarray) -> np.ndarray:
    """Per user row and listed item column (top_items, -1 padding): the item column of the history
    movie contributing most to that item's blended score, or NO_REASON. `fitted`, `data`: a
    recjobs.method.model.Fitted and Interactions, as the lists were scored with."""
    y = np.asarray(fitted.als.item_factors, np.float64)
    gram = y.T @ y
    rows = np.asarray(rows)
    out = np.full(top_items.shape, NO_REASON, np.int64)
    for start in range(0, len(rows), BATCH_USERS):
        batch = slice(start, start + BATCH_USERS)
        out[batch] = _batch_reasons(fitted, data, settings, rows[batch], top_items[batch], y, gram)
    return out


def _batch_reasons(fitted, data, settings, rows, top_items, y, gram) -> np.ndarray:
    from . import scoring

    n_items = y.shape[0]
    parts = fitted.item_item_parts(data, settings)
    blended = bool(parts) or settings.trend_weight > 0
    als_spread = scoring.dot_row_stats(fitted.als.user_factors[rows], y)[1] if blended else np.ones(len(rows))
    part_spreads = [scoring.sparse_row_stats((profile[rows] @ sim).tocsr(), n_items)[2] for _, sim, profile in parts]
    out = np.full(top_items.shape, NO_REASON, np.int64)
    for n, row in enumerate(rows):
        listed_at = np.flatnonzero(top_items[n] >= 0)
        listed = top_items[n, listed_at]
        confidence = data.confidence[row]
        sides = [
            (weight, sim, profile[row], spread[n])
            for (weight, sim, profile), spread in zip(parts, part_spreads, strict=True)
        ]
        history = np.unique(np.concatenate([confidence.indices, *(side.indices for _, _, side, _ in sides)]))
        if not len(listed) or not len(history):
            continue
        shares = np.zeros((len(listed), len(history)))
        if len(confidence.indices):
            als = als_shares(y, gram, fitted.als.regularization, confidence.indices, confidence.data, listed)
            shares[:, np.searchsorted(history, confidence.indices)] += als / max(als_spread[n], 1e-12)
        from_content = content_mask(fitted.content_rows, listed)
        for weight, sim, side, spread in sides:
            if spread > 0 and len(side.indices):
                found = part_shares(sim.indptr, sim.indices, sim.data, side.indices, side.data, listed)
                found[from_content] = 0.0  # their ALS score stands in for the part: ALS shares only
                shares[:, np.searchsorted(history, side.indices)] += weight * found / spread
        out[n, listed_at] = best_contributors(shares, history)
    return out


def liked_reasons(bundle, rows: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """Per listed item column: the liked movie (item row) contributing most to a folded-in new
    user's score (recjobs.method.bundle.method_scores: every liked movie a positive of
    confidence 1 + alpha and weight 1 in each item-item part), or NO_REASON."""
    from . import scoring

    rows, listed = np.asarray(rows, np.int64), np.asarray(listed, np.int64)
    if not len(rows) or not len(listed):
        return np.full(len(listed), NO_REASON, np.int64)
    n_items = len(bundle.movie_ids)
    confidence = np.full(len(rows), bundle.liked_confidence)
    shares = als_shares(bundle.item_factors, bundle.gram, bundle.regularization, rows, confidence, listed)
    blended = bool(bundle.item_parts) or bundle.trend_weight > 0
    if blended:  # each part standardized over every movie, as scoring.blend does
        user = fold_in(bundle.item_factors, bundle.gram, rows, confidence, bundle.regularization)
        shares /= max(float(np.std(np.asarray(bundle.item_factors, np.float64) @ user)), 1e-12)
    from_content = content_mask(bundle.content_rows, listed)
    for weight, matrix in bundle.item_parts:
        spread = float(np.std(scoring.csr_rows_sum(matrix, n_items, rows, 1.0)))
        if spread > 0:
            found = part_shares(*matrix, rows, np.ones(len(rows)), listed)
            found[from_content] = 0.0  # their ALS score stands in for the part: ALS shares only
            shares += weight * found / spread
    return best_contributors(shares, rows)
