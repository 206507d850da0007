"""The full night's blend choice: the weights of the method's blend, chosen on the night's own
latest data by the protocol users live with (recjobs.evaluation.temporal).

For each of settings.choice_windows consecutive windows of settings.choice_window_days ending at
"now" (the newest rating), the method is fitted once on the ratings before the window, and every
grid point of blend weights is scored on the known users' positives inside it (the weights
change only the blend, so one fit serves the grid). The user-windows are pooled; the weights
with the best Recall@10 win. The grid is searched one coordinate at a time from the configured
weights, until a round changes nothing:

1. the trend (trend_weight x trend_days);
2. the cosine item-item weight: blend_weight times each of ITEM_ITEM_SCALES;
3. the sequence weight: sequence_weight times each of them.

Of the blends within one standard error of the best (the same item-item weights), the one with
the least trend weight is taken (the "one standard error" rule): choosing the best of tens of
blends on a few hundred user-windows otherwise chases noise, and a large trend weight that wins
by a hair costs the most when the trend turns.

With fewer than settings.choice_min_user_windows user-windows the choice falls back: to the
previous choice (the published run's, when its configured settings are these) or else to the
configured weights. Nothing after "now" is read: the caller passes the ratings a night has.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..method import model
from ..settings import BLEND_WEIGHTS, Settings
from . import temporal

log = logging.getLogger(__name__)

TREND_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
TREND_DAYS = (7.0, 30.0)
ITEM_ITEM_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)
MAX_ROUNDS = 3
USERS_PER_WINDOW = 2_000  # a user-keyed sample when a window has more: bounds the grid's scoring
CHOSEN = BLEND_WEIGHTS  # the weights a choice sets
TEMPORAL, LEAVE_LAST_OUT = "temporal", "leave-last-out"


@dataclass(frozen=True)
class BlendChoice:
    weights: dict  # trend_weight, trend_days, blend_weight, sequence_weight
    source: str  # chosen | previous | configured
    protocol: str  # the gate's: temporal when chosen, leave-last-out otherwise
    n_user_windows: int
    reason: str
    # on the pooled windows (chosen only): the chosen blend and the baselines, per-user metrics means
    window_metrics: dict = field(default_factory=dict)
    grid: list = field(default_factory=list)  # (trend_weight, trend_days, cosine, sequence scale, recall, ndcg)
    seconds: float = 0.0

    def record(self) -> dict:
        """What a run stores of its choice (params.json and model_runs.params_json, key "blend")."""
        return {
            **self.weights,
            "source": self.source,
            "protocol": self.protocol,
            "n_user_windows": self.n_user_windows,
            "reason": self.reason,
        }

    def metric_rows(self) -> list[tuple[str, str, float]]:
        """run_metrics rows: the chosen weights (segment blend_choice) and, when chosen on the
        windows, each model's figures there (segment temporal)."""
        rows = [(f"chosen_{name}", "blend_choice", float(value)) for name, value in self.weights.items()]
        rows.append(("n_user_windows", "blend_choice", float(self.n_user_windows)))
        rows.append(("temporal_gate", "blend_choice", float(self.protocol == TEMPORAL)))
        rows.append(("seconds", "blend_choice", float(self.seconds)))
        rows += [(metric, TEMPORAL, float(value)) for metric, value in self.window_metrics.items()]
        rows += [
            (f"grid_recall_at_10:trend_weight={w:g},trend_days={d:g},cosine_x{c:g},sequence_x{q:g}", "blend_choice", r)
            for w, d, c, q, r, _ in self.grid
        ]
        return rows


def configured_weights(settings: Settings) -> dict:
    return {name: float(getattr(settings, name)) for name in CHOSEN}


def with_weights(settings: Settings, weights: dict) -> Settings:
    return settings.replace(**{name: weights[name] for name in CHOSEN if name in weights})


def windows(ratings: dict, now: int, settings: Settings) -> list[temporal.Window]:
    """The choice's windows, newest first: [now - i * w, now - (i - 1) * w) for i = 1..n."""
    width = int(settings.choice_window_days * temporal.DAY)
    found = []
    for i in range(1, settings.choice_windows + 1):
        win = temporal.window(
            ratings, now - i * width, now - (i - 1) * width, settings, USERS_PER_WINDOW, settings.random_seed
        )
        if win is not None:
            found.append(win)
    return found


def fallback(settings: Settings, previous: dict | None, n_user_windows: int, why: str) -> BlendChoice:
    if previous is not None:
        weights = {name: float(previous[name]) for name in CHOSEN}
        return BlendChoice(weights, "previous", LEAVE_LAST_OUT, n_user_windows, f"{why}; the previous choice kept")
    return BlendChoice(configured_weights(settings), "configured", LEAVE_LAST_OUT, n_user_windows, f"{why}; configured")


def least_trend_within_noise(scored: dict, best: tuple) -> tuple:
    """Of the blends scored with best's item-item weights whose Recall@10 is within one standard
    error (paired, per user-window) of best's, the one with the least trend weight: the "one
    standard error" rule of model selection. A large trend weight that wins by a hair on these
    windows costs the most when the trend turns."""
    within = []
    for point, values in scored.items():
        if point[2:] != best[2:]:
            continue
        difference = scored[best][:, 0] - values[:, 0]
        error = difference.std(ddof=1) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
        if difference.mean() <= error:
            within.append(point)
    return min(within, key=lambda p: (p[0], -scored[p][:, 0].mean()))


def choose(ratings: dict, now: int, settings: Settings, previous: dict | None = None) -> BlendChoice:
    """The blend weights for a night at `now` (Unix seconds), from `ratings` made before it.
    `previous`: the weights of the choice before (a BlendChoice.record()), the fallback."""
    started = time.perf_counter()
    if not settings.choose_blend:
        return fallback(settings, None, 0, "blend choice off (choose_blend)")
    before_now = ratings["rated_at"] < now
    if not before_now.all():  # nothing past now, ever
        ratings = {name: values[before_now] for name, values in ratings.items()}
    found = windows(ratings, now, settings)
    n_user_windows = sum(len(win.test_user_ids) for win in found)
    if n_user_windows < settings.choice_min_user_windows:
        why = (
            f"{n_user_windows} user-windows in {settings.choice_windows} windows of "
            f"{settings.choice_window_days:g} days, fewer than choice_min_user_windows "
            f"{settings.choice_min_user_windows}"
        )
        return fallback(settings, previous, n_user_windows, why)

    days = sorted({*TREND_DAYS, float(settings.trend_days)})
    fits = [_fit_window(ratings, win, settings, days) for win in found]
    scored = {}

    def score(points):
        points = [p for p in points if p not in scored]
        if points:
            per_window = [
                temporal.blend_grid_metrics(fitted, data, win, trends, points, settings)
                for win, (fitted, data, trends) in zip(found, fits, strict=True)
            ]
            for point, values in zip(points, np.concatenate(per_window, axis=1), strict=True):
                scored[point] = values

    as_configured = (float(settings.trend_weight), float(settings.trend_days), 1.0, 1.0)
    best = as_configured
    coordinates = (
        lambda p: [(w, d, p[2], p[3]) for d in TREND_DAYS for w in TREND_WEIGHTS],
        lambda p: [(p[0], p[1], c, p[3]) for c in ITEM_ITEM_SCALES],
        lambda p: [(p[0], p[1], p[2], q) for q in ITEM_ITEM_SCALES],
    )
    score([as_configured])
    for _ in range(MAX_ROUNDS):
        before = best
        for values_of in coordinates:
            points = values_of(best)
            score(points)
            best = max([*points, best], key=lambda p: (scored[p][:, 0].mean(), p == as_configured))  # ties: as is
        if best == before:
            break
    winner = least_trend_within_noise(scored, best)
    trend_weight, trend_days, cosine_scale, sequence_scale = winner
    weights = {
        "trend_weight": float(trend_weight),
        "trend_days": float(trend_days),
        "blend_weight": float(settings.blend_weight * cosine_scale),
        "sequence_weight": float(settings.sequence_weight * sequence_scale),
    }
    window_metrics = _baselines(ratings, found, fits, settings)
    chosen = scored[winner]
    window_metrics.update(
        {"recall_at_10": chosen[:, 0].mean(), "ndcg_at_10": chosen[:, 1].mean(), "hit_rate_at_10": chosen[:, 2].mean()}
    )
    configured = scored[as_configured]
    window_metrics["configured_recall_at_10"] = configured[:, 0].mean()
    window_metrics["n_users"] = float(n_user_windows)
    grid = [(*point, float(v[:, 0].mean()), float(v[:, 1].mean())) for point, v in scored.items()]
    found_by = f"{len(scored)} blends scored on {n_user_windows} user-windows ({len(found)} windows of " + (
        f"{settings.choice_window_days:g} days)"
    )
    reason = f"the best Recall@10 of {found_by}"
    if winner != best:
        reason += f", the least trend weight within one standard error of it (trend_weight {best[0]:g} was best)"
    choice = BlendChoice(
        weights,
        "chosen",
        TEMPORAL,
        n_user_windows,
        reason,
        {name: float(value) for name, value in window_metrics.items()},
        grid,
        round(time.perf_counter() - started, 3),
    )
    log.info(
        "blend choice (%s): trend_weight %g, trend_days %g, cosine x%g, sequence x%g (Recall@10 %.4f; "
        "configured %s; recent popularity %.4f) on %d user-windows in %.1fs",
        choice.source,
        trend_weight,
        trend_days,
        cosine_scale,
        sequence_scale,
        window_metrics["recall_at_10"],
        f"{configured[:, 0].mean():.4f}",
        window_metrics["recent_popularity_recall_at_10"],
        n_user_windows,
        choice.seconds,
    )
    return choice


def _fit_window(ratings: dict, win: temporal.Window, settings: Settings, days):
    """The method fitted on the ratings before the window (random start: an earlier run's
    factors have seen the window), its interactions and the trending vectors of the grid."""
    data = model.interactions(ratings, win.keep, win.user_ids, win.movie_ids, settings)
    fitted = model.fit_method(data, settings)
    return fitted, scored_rows_only(data, win.rows), temporal.trending_vectors(ratings, win, settings, days)


def scored_rows_only(data: model.Interactions, rows: np.ndarray) -> model.Interactions:
    """The interactions with only `rows`' entries kept (the same shapes) and no per-rating
    arrays: what scoring those users needs. Four windows' whole matrices at once took most of
    the choice's memory at 25M ratings."""
    mask = np.zeros(data.seen.shape[0], np.float32)
    mask[rows] = 1.0
    keep = sp.diags(mask)

    def only(matrix):
        kept = (keep @ matrix).tocsr()
        kept.eliminate_zeros()
        kept.sort_indices()
        return kept

    none = np.empty(0, np.int64)
    return dataclasses.replace(
        data,
        confidence=only(data.confidence),
        profile=only(data.profile),
        positives=only(data.positives),
        seen=only(data.seen),
        recent=only(data.recent),
        sequence_users=none,
        sequence_items=none,
        positive_times=none,
        positive_items=none,
    )


def _baselines(ratings: dict, found, fits, settings: Settings) -> dict:
    """Popularity and recent popularity (positives in the trend_days before the window) on the
    same user-windows."""
    per_model = {"popularity": [], "recent_popularity": []}
    for win, (_, data, _) in zip(found, fits, strict=True):
        recent = win.cutoff - settings.trend_days * temporal.DAY  # the days before the window, as in the backtest
        for name, since in (("popularity", -np.inf), ("recent_popularity", recent)):
            counts = temporal.popularity_scores(ratings, win, settings, since).astype(np.float64)
            per_model[name].append(
                temporal.score_top(lambda rows, c=counts: np.tile(c, (len(rows), 1)), win, data.seen)
            )
    out = {}
    for name, values in per_model.items():
        pooled = np.concatenate(values)
        out[f"{name}_recall_at_10"] = pooled[:, 0].mean()
        out[f"{name}_ndcg_at_10"] = pooled[:, 1].mean()
    return out
