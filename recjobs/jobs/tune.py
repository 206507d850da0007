"""tune: a small hyperparameter search on the validation items only.

Models are fitted on the train part (each user's ratings before their validation item)
and scored on the validation item, with every movie rated before it filtered. The test
items are never read. The search is coordinate descent over a small grid: one setting at a
time, keeping the best value, for a few passes; each candidate is the mean over a few ALS
seeds, to be less at the mercy of one initialisation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.holdout import TRAIN, VAL, assign_parts, users_now
from ..evaluation.metrics import CUTOFF, bootstrap_ci, per_user_metrics
from ..method import model
from ..settings import Settings
from ..storage import runs
from ..storage.movielens import read_catalog

log = logging.getLogger(__name__)

GRID = {
    "recency_decay": (0.0, 3.0, 5.0, 10.0, 20.0, 50.0),
    "blend_weight": (0.0, 0.5, 1.0, 2.0, 4.0),
    "alpha": (5.0, 10.0, 20.0, 40.0, 80.0),
    "regularization": (0.01, 0.05, 0.2, 1.0),
    "factors": (32, 64, 128),
    "item_neighbours": (50, 200, 1000),
    "negative_weight": (0.0, 0.1, 0.3),
    "sequence_weight": (0.0, 0.5, 1.0, 2.0),
    "sequence_window": (5, 10, 20),
    "sequence_decay": (2.0, 3.0, 5.0, 10.0),
}
ALS_SETTINGS = (
    "factors",
    "regularization",
    "iterations",
    "alpha",
    "negative_weight",
    "positive_threshold",
    "recency_decay",
)


@dataclass(frozen=True)
class TuneResult:
    output_dir: str
    best: dict
    validation_recall_at_10: float
    validation_recall_at_10_ci: tuple[float, float]
    validation_ndcg_at_10: float
    validation_ndcg_at_10_ci: tuple[float, float]
    start_recall_at_10: float
    n_candidates: int
    seconds: float


class ValidationTask:
    """The train part and the validation items of one data set, with fitted models cached."""

    def __init__(self, ratings: dict, parts: np.ndarray, seeds: tuple[int, ...]):
        self.ratings, self.parts, self.seeds = ratings, parts, seeds
        self.user_ids = np.unique(ratings["user_id"])
        self.movie_ids = np.unique(ratings["movie_id"])
        target = parts == VAL
        self.rows = model.index(ratings["user_id"][target], self.user_ids)
        self.items = model.index(ratings["movie_id"][target], self.movie_ids)
        self._als, self._similarity = {}, {}

    def data(self, settings: Settings) -> model.Interactions:
        train = self.parts == TRAIN
        now = users_now(self.ratings, train, self.user_ids)
        return model.interactions(self.ratings, train, self.user_ids, self.movie_ids, settings, now=now)

    def score(self, settings: Settings) -> dict[str, np.ndarray]:
        """Per-user validation metrics, averaged over the seeds."""
        data = self.data(settings)
        cosine_key = ("cosine", settings.item_neighbours, settings.positive_threshold, settings.blend_weight > 0)
        sequence_key = ("sequence", settings.item_neighbours, settings.sequence_window, settings.sequence_weight > 0)
        if cosine_key not in self._similarity:
            self._similarity[cosine_key] = model.item_similarity(data.positives, settings)
        if sequence_key not in self._similarity:
            self._similarity[sequence_key] = model.sequence_similarity(data, len(self.movie_ids), settings)
        per_seed = []
        for seed in self.seeds:
            key = tuple(getattr(settings, name) for name in ALS_SETTINGS) + (seed,)
            if key not in self._als:
                self._als[key] = model.fit(data.confidence, settings.replace(random_seed=seed))
            fitted = model.Fitted(self._als[key], self._similarity[cosine_key], self._similarity[sequence_key])
            top, _ = fitted.recommend(self.rows, data, CUTOFF, settings)
            per_seed.append(per_user_metrics(top, self.items))
        return {m: np.mean([s[m] for s in per_seed], axis=0) for m in per_seed[0]}


def validation_task(settings: Settings, seeds: tuple[int, ...]) -> ValidationTask:
    catalog = read_catalog(settings.data_dir, settings.positive_threshold)
    r = catalog.ratings
    ratings = {
        "user_id": r["user_id"].to_numpy(np.int64),
        "movie_id": r["movie_id"].to_numpy(np.int64),
        "rating": r["rating"].to_numpy(np.float32),
        "rated_at": r["rated_at"].to_numpy(np.int64),
    }
    parts = assign_parts(
        ratings["user_id"], ratings["rated_at"], ratings["movie_id"], ratings["rating"] >= settings.positive_threshold
    )
    return ValidationTask(ratings, parts, seeds)


def search(task: ValidationTask, start: Settings, grid: dict, passes: int):
    """Coordinate descent: returns the best settings and every (params, recall, ndcg) tried."""
    tried: dict[tuple, tuple[float, float]] = {}

    def objective(settings):
        key = tuple(sorted((name, getattr(settings, name)) for name in grid))
        if key not in tried:
            metrics = task.score(settings)
            tried[key] = (float(metrics["recall_at_10"].mean()), float(metrics["ndcg_at_10"].mean()))
            log.info("tune: %s -> Recall@10 %.4f NDCG@10 %.4f", " ".join(f"{k}={v}" for k, v in key), *tried[key])
        return tried[key]

    best = start
    best_value = objective(best)
    for _ in range(passes):
        changed = False
        for name, values in grid.items():
            for value in values:
                candidate = best.replace(**{name: value})
                result = objective(candidate)
                if result > best_value:  # Recall@10 first, NDCG@10 breaks ties
                    best, best_value, changed = candidate, result, True
        if not changed:
            break
    return best, tried


def tune(
    settings: Settings,
    output_dir: Path | None = None,
    passes: int = 2,
    seeds: tuple[int, ...] = (42, 43),
    grid: dict | None = None,
) -> TuneResult:
    """Search the grid on the validation items of settings.data_dir; write tune.json and tune.md."""
    started = time.perf_counter()
    grid = grid or GRID
    output_dir = Path(output_dir or Path(settings.artifacts) / f"tune-{runs.new_run_id()}")
    task = validation_task(settings, seeds)  # checks the data before anything is written
    output_dir.mkdir(parents=True, exist_ok=True)
    log.info("tune: %d validation users, grid %s", len(task.rows), {k: len(v) for k, v in grid.items()})
    start_metrics = task.score(settings)
    best, tried = search(task, settings, grid, passes)
    metrics = task.score(best)
    recall, ndcg = metrics["recall_at_10"], metrics["ndcg_at_10"]
    chosen = {name: getattr(best, name) for name in grid}
    result = TuneResult(
        output_dir=str(output_dir),
        best=chosen,
        validation_recall_at_10=float(recall.mean()),
        validation_recall_at_10_ci=bootstrap_ci(recall),
        validation_ndcg_at_10=float(ndcg.mean()),
        validation_ndcg_at_10_ci=bootstrap_ci(ndcg),
        start_recall_at_10=float(start_metrics["recall_at_10"].mean()),
        n_candidates=len(tried),
        seconds=round(time.perf_counter() - started, 3),
    )
    trials = [{**dict(key), "recall_at_10": r, "ndcg_at_10": n} for key, (r, n) in tried.items()]
    (output_dir / "tune.json").write_text(
        json.dumps(
            {
                "data_dir": str(settings.data_dir),
                "n_validation_users": len(task.rows),
                "seeds": list(seeds),
                "best": chosen,
                "result": {k: v for k, v in result.__dict__.items() if k != "best"},
                "trials": trials,
            },
            indent=2,
            default=str,
        )
    )
    names = list(grid)
    lines = [
        f"# Validation search on {settings.data_dir}",
        "",
        f"{len(task.rows)} validation users; mean over ALS seeds {list(seeds)}. "
        f"Chosen: {', '.join(f'{k}={v}' for k, v in chosen.items())}; Recall@10 "
        f"{result.validation_recall_at_10:.4f} {tuple(round(x, 4) for x in result.validation_recall_at_10_ci)}, "
        f"NDCG@10 {result.validation_ndcg_at_10:.4f}.",
        "",
        "| " + " | ".join(names) + " | Recall@10 | NDCG@10 |",
        "|" + "---|" * (len(names) + 2),
    ]
    for t in sorted(trials, key=lambda t: (-t["recall_at_10"], -t["ndcg_at_10"])):
        lines.append(
            "| " + " | ".join(str(t[n]) for n in names) + f" | {t['recall_at_10']:.4f} | {t['ndcg_at_10']:.4f} |"
        )
    (output_dir / "tune.md").write_text("\n".join(lines) + "\n")
    log.info(
        "tune: chose %s, validation Recall@10 %.4f (start %.4f) after %d candidates in %.0fs",
        chosen,
        result.validation_recall_at_10,
        result.start_recall_at_10,
        len(tried),
        result.seconds,
    )
    return result
