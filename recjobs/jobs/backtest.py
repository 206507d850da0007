"""backtest: replay nightly runs and score what each night would have published.

For each cutoff T (a night at 02:30 UTC), every model is fitted on the ratings made before T,
exactly as the nightly job fits the published model, and nothing is published. Each user
known at T (a rating before T) with a positive in [T, T + window) is scored on those
positives: the movies they went on to like in the days after the run. Movies first rated
after T are left out of the targets (no model could recommend them). Every model filters the
same movies: all the user rated before T.

Models, side by side on the same user-nights:
    model              the method (settings as given)
    als                its ALS part alone (the same fit)
    reference          the reference recipe (recjobs.method.model.REFERENCE_RECIPE), same data and filtering
    popularity         positives per movie before T
    recent_popularity  positives per movie in the `recent_days` before T

Recall@10 = hits / min(10, targets); NDCG@10 binary; hit rate = at least one hit. Pooled over
user-nights with 95% bootstrap intervals that resample users (a user scored on several nights
counts once per draw, with all their nights), and the paired gains of the method over each
baseline; also per night.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.metrics import CUTOFF, bootstrap_ci, prefix, recall_ndcg_of_items
from ..method import model
from ..settings import Settings
from ..storage import artifacts, db, runs
from ..storage.movielens import read_catalog

log = logging.getLogger(__name__)

DAY = 86_400
NIGHT = 2 * 3600 + 30 * 60  # the nightly run starts at 02:30 UTC
MODELS = ("model", "als", "reference", "popularity", "recent_popularity")
BASELINES = MODELS[1:]
METRICS = ("recall_at_10", "ndcg_at_10", "hit_rate_at_10")
SEGMENT = "backtest"  # run_metrics segment of the pooled figures; per night: backtest:<date>


@dataclass(frozen=True)
class BacktestResult:
    output_dir: str
    cutoffs: tuple[str, ...]  # ISO dates of the nights
    n_user_nights: int
    n_users: int
    recall_at_10: dict  # model -> pooled value
    recall_at_10_ci: dict  # model -> (low, high)
    ndcg_at_10: dict
    hit_rate_at_10: dict
    recall_gain: dict  # baseline -> (gain, low, high), paired
    seconds: float


def night_before(timestamp: float) -> int:
    """The last 02:30 UTC at or before `timestamp` (Unix seconds)."""
    return int((timestamp - NIGHT) // DAY * DAY + NIGHT)


def nightly_cutoffs(
    rated_at: np.ndarray, nights: int, window_days: float, period: tuple[float, float] = (0.75, 1.0)
) -> np.ndarray:
    """`nights` distinct nights spread evenly over a period of the timeline, given as shares of
    the ratings made (default: the last quarter): from the night when period[0] of the ratings
    had been made to the last night whose whole window ends before period[1] had been."""
    last = night_before(np.quantile(rated_at, period[1]) - window_days * DAY)
    first = min(night_before(np.quantile(rated_at, period[0])), last)
    return np.unique([night_before(t) for t in np.linspace(first, last, max(1, nights))])


def rating_arrays(catalog) -> dict[str, np.ndarray]:
    r = catalog.ratings
    return {name: r[name].to_numpy(kind) for name, kind in artifacts.RATING_ARRAYS.items()}


def one_night(ratings: dict, cutoff: int, settings: Settings, window_days: float, recent_days: float):
    """(user-night rows, per-model per-user metrics) for one cutoff, or None when no user qualifies."""
    before = ratings["rated_at"] < cutoff
    user_ids = np.unique(ratings["user_id"][before])
    movie_ids = np.unique(ratings["movie_id"][before])
    positive = ratings["rating"] >= settings.positive_threshold
    later = (
        positive
        & (ratings["rated_at"] >= cutoff)
        & (ratings["rated_at"] < cutoff + window_days * DAY)
        & np.isin(ratings["user_id"], user_ids)
        & np.isin(ratings["movie_id"], movie_ids)
    )
    if not later.any():
        return None
    targets: dict[int, set[int]] = {}
    for user, movie in zip(ratings["user_id"][later].tolist(), ratings["movie_id"][later].tolist(), strict=True):
        targets.setdefault(user, set()).add(movie)
    test_users = np.array(sorted(targets))
    rows = model.index(test_users, user_ids)

    data = model.interactions(ratings, before, user_ids, movie_ids, settings)
    fitted = model.fit_method(data, settings)
    tops = {
        "model": fitted.recommend(rows, data, CUTOFF, settings)[0],
        "als": model.top_n(fitted.als, rows, data.seen, CUTOFF)[0],
    }
    reference_settings = settings.replace(**model.REFERENCE_RECIPE)
    reference_data = model.interactions(ratings, before, user_ids, movie_ids, reference_settings)
    reference = model.fit(reference_data.confidence, reference_settings)
    tops["reference"] = model.top_n(reference, rows, data.seen, CUTOFF)[0]
    for name, since in (("popularity", -np.inf), ("recent_popularity", cutoff - recent_days * DAY)):
        recent = before & positive & (ratings["rated_at"] >= since)
        counts = np.bincount(model.index(ratings["movie_id"][recent], movie_ids), minlength=len(movie_ids))
        popular = model.popularity_model(counts.astype(np.float32), len(user_ids), settings)
        tops[name] = model.top_n(popular, rows, data.seen, CUTOFF)[0]

    per_user = {name: np.zeros((len(rows), len(METRICS))) for name in MODELS}
    for name, top in tops.items():
        for i, user in enumerate(test_users.tolist()):
            recall, ndcg = recall_ndcg_of_items(movie_ids[top[i][top[i] >= 0]], targets[user])
            per_user[name][i] = (recall, ndcg, float(recall > 0))
    return test_users, per_user


def backtest(
    settings: Settings,
    output_dir: Path | None = None,
    nights: int = 48,
    window_days: float = 30.0,
    recent_days: float = 30.0,
    run_id: str | None = None,
    period: tuple[float, float] = (0.75, 1.0),
) -> BacktestResult:
    """Replay nightly runs over the last part of --data-dir's timeline: fit on the ratings before
    each night, score the positives of the following --window-days, against popularity, recent
    popularity, the reference recipe and ALS alone; write metrics.json and report.md (and the
    run's run_metrics with --run-id). Publishes nothing."""
    started = time.perf_counter()
    if nights < 1 or window_days <= 0 or recent_days <= 0:
        from ..errors import ConfigError

        raise ConfigError(
            f"backtest: nights {nights}, window {window_days} days, recent {recent_days} days; "
            "expected at least 1 night and positive day counts"
        )
    catalog = read_catalog(settings.data_dir, settings.positive_threshold)
    ratings = rating_arrays(catalog)
    cutoffs = nightly_cutoffs(ratings["rated_at"], nights, window_days, period)
    output_dir = Path(output_dir or Path(settings.artifacts) / f"backtest-{runs.new_run_id()}")
    log.info("backtest: %d nights from %s, %g-day windows", len(cutoffs), _date(cutoffs[0]), window_days)

    pooled = {name: [] for name in MODELS}
    users, per_night = [], []
    for cutoff in cutoffs:
        night = one_night(ratings, int(cutoff), settings, window_days, recent_days)
        if night is None:
            continue
        test_users, per_user = night
        users.append(test_users)
        for name in MODELS:
            pooled[name].append(per_user[name])
        per_night.append((_date(cutoff), len(test_users), {n: per_user[n].mean(axis=0) for n in MODELS}))
        log.info(
            "backtest %s: %d users, Recall@10 %s",
            _date(cutoff),
            len(test_users),
            " ".join(f"{n} {per_user[n][:, 0].mean():.3f}" for n in MODELS),
        )
    if not users:
        from ..errors import DataError

        raise DataError(
            f"{settings.data_dir}: no known user rated a positive within {window_days:g} days after any "
            "backtest night; expected users who come back after a night"
        )
    pooled = {name: np.vstack(values) for name, values in pooled.items()}
    rows = metric_rows(pooled, per_night, np.concatenate(users))
    values = {(m, s): v for m, s, v in rows}
    n_user_nights = len(pooled["model"])
    result = BacktestResult(
        output_dir=str(output_dir),
        cutoffs=tuple(date for date, _, _ in per_night),
        n_user_nights=n_user_nights,
        n_users=len(np.unique(np.concatenate(users))),
        recall_at_10={n: values[(prefix(n) + "recall_at_10", SEGMENT)] for n in MODELS},
        recall_at_10_ci={
            n: (
                values[(prefix(n) + "recall_at_10_ci_low", SEGMENT)],
                values[(prefix(n) + "recall_at_10_ci_high", SEGMENT)],
            )
            for n in MODELS
        },
        ndcg_at_10={n: values[(prefix(n) + "ndcg_at_10", SEGMENT)] for n in MODELS},
        hit_rate_at_10={n: values[(prefix(n) + "hit_rate_at_10", SEGMENT)] for n in MODELS},
        recall_gain={
            b: tuple(values[(f"recall_at_10_gain_over_{b}{end}", SEGMENT)] for end in ("", "_ci_low", "_ci_high"))
            for b in BASELINES
        },
        seconds=round(time.perf_counter() - started, 3),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(
        output_dir / "metrics.json",
        {
            "data_dir": str(settings.data_dir),
            "nights": nights,
            "window_days": window_days,
            "recent_days": recent_days,
            "params": settings.model_params(),
            "reference_recipe": model.REFERENCE_RECIPE,
            "result": result.__dict__,
            "rows": [{"metric": m, "segment": s, "value": v} for m, s, v in rows],
        },
    )
    write_report(output_dir, result, per_night, window_days, recent_days)
    if run_id is not None:
        with db.transaction(settings.db) as conn:
            runs.get(conn, run_id)
            runs.upsert_metrics(conn, run_id, rows)
    log.info(
        "backtest: %d user-nights; Recall@10 model %.4f, recent popularity %.4f, popularity %.4f in %.0fs",
        n_user_nights,
        result.recall_at_10["model"],
        result.recall_at_10["recent_popularity"],
        result.recall_at_10["popularity"],
        result.seconds,
    )
    return result


def metric_rows(pooled: dict[str, np.ndarray], per_night, users: np.ndarray) -> list[tuple[str, str, float]]:
    """(metric, segment, value): pooled means with intervals and paired gains (users resampled
    whole, with all their nights), then per night."""
    rows = []
    for name in MODELS:
        for j, metric in enumerate(METRICS):
            values = pooled[name][:, j]
            low, high = bootstrap_ci(values, groups=users)
            rows += [
                (prefix(name) + metric, SEGMENT, float(values.mean())),
                (prefix(name) + metric + "_ci_low", SEGMENT, low),
                (prefix(name) + metric + "_ci_high", SEGMENT, high),
            ]
    for baseline in BASELINES:
        for j, metric in enumerate(METRICS[:2]):
            gain = pooled["model"][:, j] - pooled[baseline][:, j]
            low, high = bootstrap_ci(gain, groups=users)
            rows += [
                (f"{metric}_gain_over_{baseline}", SEGMENT, float(gain.mean())),
                (f"{metric}_gain_over_{baseline}_ci_low", SEGMENT, low),
                (f"{metric}_gain_over_{baseline}_ci_high", SEGMENT, high),
            ]
    rows.append(("n_users", SEGMENT, float(len(pooled["model"]))))
    for date, n_users, means in per_night:
        rows.append(("n_users", f"{SEGMENT}:{date}", float(n_users)))
        for name in MODELS:
            for j, metric in enumerate(METRICS):
                rows.append((prefix(name) + metric, f"{SEGMENT}:{date}", float(means[name][j])))
    return rows


LABELS = {
    "model": "the method (published)",
    "als": "ALS alone",
    "reference": "reference recipe",
    "popularity": "popularity (all time)",
    "recent_popularity": "recent popularity",
}


def write_report(output_dir: Path, result: BacktestResult, per_night, window_days: float, recent_days: float) -> Path:
    lines = [
        "# Nightly backtest",
        "",
        f"{len(result.cutoffs)} nights ({result.cutoffs[0]} to {result.cutoffs[-1]}, 02:30 UTC); each user known "
        f"at a night is scored on the movies they rated >= the positive threshold in the next {window_days:g} days. "
        f"{result.n_user_nights} user-nights of {result.n_users} users. Recent popularity: positives in the "
        f"{recent_days:g} days before the night. 95% bootstrap intervals resampling users, each with all their nights.",
        "",
        "| model | Recall@10 | NDCG@10 | hit rate@10 |",
        "|---|---|---|---|",
    ]
    for name in MODELS:
        low, high = result.recall_at_10_ci[name]
        lines.append(
            f"| {LABELS[name]} | {result.recall_at_10[name]:.4f} [{low:.4f}, {high:.4f}] | "
            f"{result.ndcg_at_10[name]:.4f} | {result.hit_rate_at_10[name]:.4f} |"
        )
    lines += ["", "Gain of the method in Recall@10 (paired bootstrap):", ""]
    for baseline, (gain, low, high) in result.recall_gain.items():
        base = result.recall_at_10[baseline]
        relative = f", {gain / base:+.0%} relative" if base > 0 else ""
        lines.append(f"- over {LABELS[baseline]}: {gain:+.4f} [{low:+.4f}, {high:+.4f}]{relative}")
    lines += [
        "",
        "## Per night",
        "",
        "| night | users | " + " | ".join(LABELS[n] for n in MODELS) + " |",
        "|---|---|" + "---|" * len(MODELS),
    ]
    for date, n_users, means in per_night:
        lines.append(f"| {date} | {n_users} | " + " | ".join(f"{means[n][0]:.3f}" for n in MODELS) + " |")
    lines += ["", "![Recall@10 per night](backtest.png)"]
    plot(Path(output_dir) / "backtest.png", result, per_night)
    text = "\n".join(lines) + "\n"
    return artifacts.write_atomically(Path(output_dir) / "report.md", lambda temp: temp.write_text(text))


def plot(path: Path, result: BacktestResult, per_night) -> Path:
    """Pooled Recall@10 with intervals per model; Recall@10 per night (users as point size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True, width_ratios=(1, 2))
    values = [result.recall_at_10[n] for n in MODELS]
    errors = [
        [v - result.recall_at_10_ci[n][0] for v, n in zip(values, MODELS, strict=True)],
        [result.recall_at_10_ci[n][1] - v for v, n in zip(values, MODELS, strict=True)],
    ]
    left.bar(range(len(MODELS)), values, yerr=errors, capsize=3, color=[f"C{i}" for i in range(len(MODELS))])
    left.set_xticks(range(len(MODELS)), [n.replace("_", "\n") for n in MODELS], fontsize=8)
    left.set_title(f"Recall@10, {result.n_user_nights} user-nights (95% CI)")
    nights = list(range(len(per_night)))
    sizes = [6 + 2 * n_users for _, n_users, _ in per_night]
    for i, name in enumerate(MODELS):
        right.plot(nights, [means[name][0] for _, _, means in per_night], color=f"C{i}", alpha=0.6, label=LABELS[name])
        right.scatter(nights, [means[name][0] for _, _, means in per_night], s=sizes, color=f"C{i}", alpha=0.6)
    step = max(1, len(per_night) // 8)
    right.set_xticks(nights[::step], [date for date, _, _ in per_night][::step], fontsize=8)
    right.set_title("Recall@10 per night (point size: users)")
    right.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _date(timestamp) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).date().isoformat()
