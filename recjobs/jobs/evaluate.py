"""evaluate: Recall@10, NDCG@10 and MRR@10 of the evaluation model on each user's test item,
with 95% bootstrap intervals, against popularity and the reference recipe in the same run.

The evaluation model was fitted on every rating each user made before their test item;
every movie rated before the test item is filtered, whatever its rating. Figures go to
metrics.json, model_runs, the long-format run_metrics table and report.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..evaluation.freshness import forward_metrics
from ..evaluation.holdout import TEST, NightPlan, one_fit_evaluation_data, one_fit_keep
from ..evaluation.metrics import CUTOFF, MODELS, bootstrap_ci, per_user_metrics, prefix
from ..evaluation.report import write_report
from ..method import model, scoring, spark_engine
from ..settings import Settings
from ..storage import artifacts, db, runs

log = logging.getLogger(__name__)

HISTORY_BUCKETS = (1, 20, 50, 100, 250)  # lower bounds of the history-length segments


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    metrics_path: str
    report_path: str
    n_users_evaluated: int
    recall_at_10: float
    recall_at_10_ci: tuple[float, float]
    ndcg_at_10: float
    ndcg_at_10_ci: tuple[float, float]
    mrr_at_10: float
    popularity_recall_at_10: float
    popularity_recall_at_10_ci: tuple[float, float]
    popularity_ndcg_at_10: float
    popularity_ndcg_at_10_ci: tuple[float, float]
    recent_popularity_recall_at_10: float
    recent_popularity_recall_at_10_ci: tuple[float, float]
    recent_popularity_ndcg_at_10: float
    recent_popularity_ndcg_at_10_ci: tuple[float, float]
    reference_recall_at_10: float | None  # full nights only
    reference_recall_at_10_ci: tuple[float, float] | None
    reference_ndcg_at_10: float | None
    reference_ndcg_at_10_ci: tuple[float, float] | None
    coverage_at_10: float
    full_evaluation: bool
    seconds: float


def history_segment(lengths: np.ndarray) -> np.ndarray:
    """'history:20-49'-style labels from the number of ratings before the test item."""
    bounds = list(HISTORY_BUCKETS) + [None]
    labels = [f"history:{lo}-{hi - 1}" if hi else f"history:{lo}+" for lo, hi in zip(bounds, bounds[1:], strict=False)]
    return np.array(labels, dtype=object)[np.searchsorted(HISTORY_BUCKETS, lengths, side="right") - 1]


def reference_top(
    ratings: dict, keep: np.ndarray, user_ids, movie_ids, rows: np.ndarray, seen, settings: Settings
) -> np.ndarray:
    """The reference recipe's top-10 under the method's protocol: fitted on the one fit's
    ratings, every movie the user rated before the test item filtered."""
    reference = settings.replace(**model.REFERENCE_RECIPE)
    data = model.interactions(ratings, keep, user_ids, movie_ids, reference)
    als = model.fit(data.confidence, reference)
    top, _ = model.top_n(als, rows, seen, CUTOFF)
    return top


def recent_popularity_top(data: model.Interactions, rows: np.ndarray, batch: int = 1024) -> np.ndarray:
    """ "Popular this month": each user's top-10 by positives in the trend_days before their own
    now (their newest rating in the fit), every movie they rated filtered."""
    tops = [np.empty((0, min(CUTOFF, data.seen.shape[1])), np.int64)]
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        top, _ = scoring.top_n(data.trend_scores(chunk), *data.seen[chunk].nonzero(), CUTOFF, overwrite=True)
        tops.append(top)
    return np.vstack(tops)


def summarize(
    per_user: dict[str, dict[str, np.ndarray]],
    tops: dict[str, np.ndarray],
    segments: np.ndarray,
    item_counts: np.ndarray,
) -> list[tuple[str, str, float]]:
    """(metric, segment, value) rows: means, 95% intervals, gains over the baselines,
    coverage and mean popularity of the top-10 lists, and every metric per segment."""
    rows = []
    n_items = len(item_counts)
    for name in (m for m in MODELS if m in per_user):
        name_prefix = prefix(name)
        for metric, values in per_user[name].items():
            low, high = bootstrap_ci(values)
            rows += [
                (name_prefix + metric, "all", float(values.mean())),
                (name_prefix + metric + "_ci_low", "all", low),
                (name_prefix + metric + "_ci_high", "all", high),
            ]
            for segment in sorted(set(segments)):
                rows.append((name_prefix + metric, segment, float(values[segments == segment].mean())))
        top = tops[name][:, :CUTOFF]
        valid = top[top >= 0]
        rows.append((name_prefix + "coverage_at_10", "all", float(len(np.unique(valid)) / max(1, n_items))))
        rows.append(
            (name_prefix + "mean_popularity_at_10", "all", float(item_counts[valid].mean()) if len(valid) else 0.0)
        )
    for baseline in (m for m in MODELS[1:] if m in per_user):
        for metric in ("recall_at_10", "ndcg_at_10"):
            gain = per_user["model"][metric] - per_user[baseline][metric]  # paired: same users resampled
            low, high = bootstrap_ci(gain)
            rows += [
                (f"{metric}_gain_over_{baseline}", "all", float(gain.mean())),
                (f"{metric}_gain_over_{baseline}_ci_low", "all", low),
                (f"{metric}_gain_over_{baseline}_ci_high", "all", high),
            ]
    rows.append(("n_users", "all", float(len(segments))))
    for segment in sorted(set(segments)):
        rows.append(("n_users", segment, float((segments == segment).sum())))
    return rows


def evaluate(settings: Settings, run_id: str) -> EvaluateResult:
    """Recall@10, NDCG@10 and MRR@10 with 95% bootstrap intervals on each evaluated user's test
    item (every movie rated before it filtered) for the night's one fit, popularity, recent
    popularity and, on a full night, the reference recipe; coverage and history-length segments;
    writes metrics.json and report.md."""
    started = time.perf_counter()
    directory = artifacts.run_dir(settings.artifacts, run_id)
    settings = artifacts.run_settings(settings, directory)  # with the blend train chose or kept
    ratings, parts = artifacts.read_ratings(directory), artifacts.read_parts(directory)
    plan = NightPlan.from_arrays(artifacts.read_plan(directory))
    fitted, factors = model.Fitted.read(directory, artifacts.EVAL, settings)
    user_ids, movie_ids = factors.user_ids, factors.movie_ids
    keep = one_fit_keep(ratings, parts, plan)
    before_test = one_fit_evaluation_data(ratings, keep, plan, user_ids, movie_ids, settings)
    test = (parts == TEST) & np.isin(ratings["user_id"], plan.eval_user_ids)
    test_rows = model.index(ratings["user_id"][test], user_ids)
    test_items = model.index(ratings["movie_id"][test], movie_ids)

    candidates = spark_engine.read_candidates(directory, artifacts.EVAL, test_rows)
    if candidates is None:
        tops = {"model": fitted.recommend(test_rows, before_test, CUTOFF, settings)[0]}
    else:  # engine=spark: its candidates re-ranked, as its published lists are made
        tops = {"model": fitted.recommend_candidates(test_rows, candidates, before_test, CUTOFF, settings)[0]}
    if plan.full:
        tops["reference"] = reference_top(ratings, keep, user_ids, movie_ids, test_rows, before_test.seen, settings)
    movie_rows = model.index(ratings["movie_id"][keep], movie_ids)
    rated_counts = np.bincount(movie_rows, minlength=len(movie_ids))  # users who rated each movie, in the fit
    positive = ratings["rating"][keep] >= settings.positive_threshold
    positive_counts = np.bincount(movie_rows[positive], minlength=len(movie_ids)).astype(np.float32)
    popularity = model.popularity_model(positive_counts, len(user_ids), settings)
    tops["popularity"] = model.top_n(popularity, test_rows, before_test.seen, CUTOFF)[0]
    tops["recent_popularity"] = recent_popularity_top(before_test, test_rows)

    per_user = {name: per_user_metrics(top, test_items) for name, top in tops.items()}
    history_lengths = np.diff(before_test.seen.indptr)[test_rows]
    metric_rows = summarize(per_user, tops, history_segment(history_lengths), rated_counts)
    values = {metric: value for metric, segment, value in metric_rows if segment == "all"}

    metrics_path = artifacts.write_json(
        directory / artifacts.METRICS,
        {
            "n_users_evaluated": len(test_rows),
            "all": values,
            "segments": [{"metric": m, "segment": s, "value": v} for m, s, v in metric_rows if s != "all"],
            "params": settings.model_params(),
            "full_evaluation": plan.full,
            "full_evaluation_reason": plan.reason,
            "reference_recipe": model.REFERENCE_RECIPE if plan.full else None,
        },
    )
    with db.reading(settings.db) as conn:  # the run readers are served, on what arrived since its data
        forward_rows = forward_metrics(conn, run_id, ratings, settings)
        temporal = dict(conn.execute(db.query("publish.temporal_figures"), {"run_id": run_id}).all())
    blend = artifacts.read_params(directory).get("blend")
    chosen_on_windows = blend is not None and blend["protocol"] == "temporal"
    report_path = write_report(directory, run_id, metric_rows, settings, blend, temporal if chosen_on_windows else None)

    def ci(name):
        if name + "_ci_low" not in values:
            return None
        return (round(values[name + "_ci_low"], 4), round(values[name + "_ci_high"], 4))

    result = EvaluateResult(
        run_id=run_id,
        metrics_path=str(metrics_path),
        report_path=str(report_path),
        n_users_evaluated=len(test_rows),
        recall_at_10=values["recall_at_10"],
        recall_at_10_ci=ci("recall_at_10"),
        ndcg_at_10=values["ndcg_at_10"],
        ndcg_at_10_ci=ci("ndcg_at_10"),
        mrr_at_10=values["mrr_at_10"],
        popularity_recall_at_10=values["popularity_recall_at_10"],
        popularity_recall_at_10_ci=ci("popularity_recall_at_10"),
        popularity_ndcg_at_10=values["popularity_ndcg_at_10"],
        popularity_ndcg_at_10_ci=ci("popularity_ndcg_at_10"),
        recent_popularity_recall_at_10=values["recent_popularity_recall_at_10"],
        recent_popularity_recall_at_10_ci=ci("recent_popularity_recall_at_10"),
        recent_popularity_ndcg_at_10=values["recent_popularity_ndcg_at_10"],
        recent_popularity_ndcg_at_10_ci=ci("recent_popularity_ndcg_at_10"),
        reference_recall_at_10=values.get("reference_recall_at_10"),
        reference_recall_at_10_ci=ci("reference_recall_at_10"),
        reference_ndcg_at_10=values.get("reference_ndcg_at_10"),
        reference_ndcg_at_10_ci=ci("reference_ndcg_at_10"),
        coverage_at_10=values["coverage_at_10"],
        full_evaluation=plan.full,
        seconds=round(time.perf_counter() - started, 3),
    )
    with db.transaction(settings.db) as conn:
        runs.update(
            conn,
            run_id,
            **{
                name: values[name]
                for name in ("recall_at_10", "ndcg_at_10", "popularity_recall_at_10", "popularity_ndcg_at_10")
            },
        )
        runs.upsert_metrics(conn, run_id, metric_rows + forward_rows)
        runs.record_seconds(conn, run_id, "evaluate", result.seconds)
    log.info(
        "evaluate %s (%s night): %d users, Recall@10 %.4f [%.4f, %.4f] NDCG@10 %.4f [%.4f, %.4f]; "
        "popularity %.4f / %.4f, recent popularity %.4f / %.4f%s in %.1fs",
        run_id,
        "full" if plan.full else "usual",
        len(test_rows),
        result.recall_at_10,
        *result.recall_at_10_ci,
        result.ndcg_at_10,
        *result.ndcg_at_10_ci,
        result.popularity_recall_at_10,
        result.popularity_ndcg_at_10,
        result.recent_popularity_recall_at_10,
        result.recent_popularity_ndcg_at_10,
        f", reference {result.reference_recall_at_10:.4f} / {result.reference_ndcg_at_10:.4f}" if plan.full else "",
        result.seconds,
    )
    if forward_rows:
        forward = {metric: value for metric, _, value in forward_rows}
        log.info(
            "evaluate %s: the served run on the %d users who rated since its data (%s): Recall@10 %.4f, "
            "popularity %.4f, recent popularity %.4f",
            run_id,
            forward["forward_n_users"],
            forward_rows[0][1],
            forward["forward_recall_at_10"],
            forward["forward_popularity_recall_at_10"],
            forward["forward_recent_popularity_recall_at_10"],
        )
    return result
