"""run: load -> split -> train -> evaluate -> precompute in one process."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from . import db, runs
from .cold_start_eval import ColdStartEvalResult, evaluate_cold_start
from .evaluate import EvaluateResult, evaluate
from .load import LoadResult, load
from .precompute import PrecomputeResult, precompute
from .settings import Settings
from .split import SplitResult, split
from .train import TrainResult, train

log = logging.getLogger(__name__)

STEPS = ("load", "split", "train", "evaluate", "precompute")


@dataclass(frozen=True)
class RunResult:
    run_id: str
    load: LoadResult
    split: SplitResult
    train: TrainResult
    evaluate: EvaluateResult
    precompute: PrecomputeResult
    seconds: float
    cold_start: ColdStartEvalResult | None = None   # after publishing: it does not gate the run


def run(settings: Settings, run_id: str | None = None) -> RunResult:
    run_id = runs.check_run_id(run_id or runs.new_run_id())
    started = time.perf_counter()
    log.info("run %s: starting on %s", run_id, settings.data_dir)
    loaded = load(settings, run_id)  # a failed load writes nothing, not even the run record
    try:
        results = [loaded]
        for step in (split, train, evaluate, precompute):
            results.append(step(settings, run_id))
    except Exception as e:
        runs.mark_failed(settings, run_id, f"{type(e).__name__}: {e}")
        raise
    try:
        cold_start = evaluate_cold_start(settings, run_id)
    except Exception:  # measured after publishing; it gates nothing, so it fails nothing
        log.exception("run %s: the cold-start evaluation failed; the run stays %s",
                      run_id, results[-1].status)
        cold_start = None
    result = RunResult(run_id, *results, seconds=round(time.perf_counter() - started, 3), cold_start=cold_start)
    log.info("run %s: %s in %.1fs", run_id, result.precompute.status, result.seconds)
    return result


def latest_run_id(settings: Settings) -> str | None:
    with db.reading(settings.db) as conn:
        return conn.execute(db.query("runs.latest_id")).scalar()
