"""A new user's top list from the run's cold-start bundle: the answer of the cold-start job and
route, and the list a refresh stores for a user the model does not know yet. Numpy only."""

from __future__ import annotations

import numpy as np

from . import diversity, reasons, scoring
from .bundle import Bundle, scores_for


def new_user_top(bundle: Bundle, rows: np.ndarray, exclude: np.ndarray, k: int):
    """(method, the k best item rows, their scores, each one's reason row or -1) for a new user
    whose known liked movies are `rows`, the `exclude` rows left out, re-ranked by the run's
    diversity as its nightly lists are: what the cold-start job and a refresh's new users get."""
    method, scores = scores_for(bundle, rows)
    best = scoring.top_k(scores, exclude, k if bundle.diversity <= 0 else diversity.CANDIDATES * k)
    if bundle.diversity > 0:
        best = diversity.rerank(best[None], scores[best][None], bundle.item_factors, bundle.diversity, k)[0]
        best = best[best >= 0]
    return method, best, np.asarray(scores, np.float64)[best], reasons.liked_reasons(bundle, rows, best)
