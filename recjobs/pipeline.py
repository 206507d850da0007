"""run: the nightly jobs in order, in one process, as the DAG runs them as tasks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .jobs.cold_start_eval import ColdStartEvalResult, evaluate_cold_start
from .jobs.evaluate import EvaluateResult, evaluate
from .jobs.load import LoadResult, load
from .jobs.precompute import PrecomputeResult, precompute
from .jobs.split import SplitResult, split
from .jobs.train import TrainResult, train
from .settings import Settings
from .storage import db, runs

log = logging.getLogger(__name__)

# The jobs that make and publish a run (runs.RUN_STEPS); each is also a command and a DAG task.
JOBS = {"load": load, "split": split, "train": train, "evaluate": evaluate, "precompute": precompute}
assert tuple(JOBS) == runs.RUN_STEPS


@dataclass(frozen=True)
class RunResult:
    run_id: str
    load: LoadResult
    split: SplitResult
    train: TrainResult
    evaluate: EvaluateResult
    precompute: PrecomputeResult
    seconds: float
    cold_start: ColdStartEvalResult | None = None  # after publishing: it does not gate the run


def run(settings: Settings, run_id: str | None = None) -> RunResult:
    """Run load, split, train, evaluate and precompute in order, publish the result if it passes
    the quality gate, then measure cold start (evaluate-cold-start)."""
    run_id = runs.check_run_id(run_id or runs.new_run_id())
    started = time.perf_counter()
    results = {}
    with runs.run_lock(settings, run_id):
        log.info("run %s: starting on %s", run_id, settings.data_dir)
        for name, job in JOBS.items():
            with runs.failure_recorded(settings, run_id, name):
                results[name] = job(settings, run_id)
            if name == "load":  # one process runs it all: once it is gone, the run is abandoned
                with db.transaction(settings.db) as conn:
                    runs.record_owner(conn, run_id)
        try:
            cold_start = evaluate_cold_start(settings, run_id)
        except Exception:  # measured after publishing; it gates nothing, so it fails nothing
            log.exception(
                "run %s: the cold-start evaluation failed; the run stays %s", run_id, results["precompute"].status
            )
            cold_start = None
    result = RunResult(run_id, **results, seconds=round(time.perf_counter() - started, 3), cold_start=cold_start)
    log.info("run %s: %s in %.1fs", run_id, result.precompute.status, result.seconds)
    return result
