"""The run record: ids, the model_runs row and the rule for a failed step."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from pathlib import Path

from . import db
from .artifacts import check_run_id
from .errors import StateError
from .settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "RUN_STEPS",
    "check_run_id",
    "failure_recorded",
    "finish",
    "get",
    "latest_id",
    "new_run_id",
    "now",
    "record_seconds",
    "start",
    "update",
    "upsert_metrics",
]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def start(conn, run_id: str, settings: Settings, directory: Path, data_sha256: str) -> None:
    conn.execute(
        db.query("runs.start"),
        {
            "run_id": run_id,
            "now": now(),
            "params_json": json.dumps(settings.model_params(), sort_keys=True),
            "data_sha256": data_sha256,
            "artifacts_dir": str(Path(directory).resolve()),
        },
    )


UPDATE_GROUPS = {
    "set_load_counts": {"n_ratings", "n_dropped_ratings"},
    "set_split_counts": {"n_train", "n_test_users"},
    "set_model_counts": {"n_users", "n_items"},
    "set_metrics": {"recall_at_10", "ndcg_at_10", "popularity_recall_at_10", "popularity_ndcg_at_10"},
}


def update(conn, run_id: str, **values) -> None:
    """Set one group of columns; the group is chosen by the names given."""
    name = next(n for n, cols in UPDATE_GROUPS.items() if cols == set(values))
    conn.execute(db.query(f"runs.{name}"), {"run_id": run_id, **values})


def get(conn, run_id: str) -> dict:
    row = conn.execute(db.query("runs.get"), {"run_id": run_id}).mappings().first()
    if row is None:
        raise StateError(f"run {run_id!r} is not in model_runs; run `recjobs load` first")
    return dict(row)


def record_seconds(conn, run_id: str, step: str, seconds: float) -> None:
    conn.execute(db.query("runs.record_seconds"), {"run_id": run_id, "step": step, "seconds": round(seconds, 3)})


def upsert_metrics(conn, run_id: str, rows) -> None:
    """(metric, segment, value) rows into run_metrics."""
    for metric, segment, value in rows:
        conn.execute(
            db.query("runs.upsert_metric"), {"run_id": run_id, "metric": metric, "segment": segment, "value": value}
        )


def finish(conn, run_id: str, status: str, reason: str | None = None) -> None:
    conn.execute(db.query("runs.finish"), {"run_id": run_id, "status": status, "reason": reason, "now": now()})


def latest_id(settings: Settings) -> str | None:
    """The newest run in the database, or None."""
    with db.reading(settings.db) as conn:
        return conn.execute(db.query("runs.latest_id")).scalar()


# The steps that make and publish a run, in order. Later steps (evaluate_cold_start) gate nothing.
RUN_STEPS = ("load", "split", "train", "evaluate", "precompute")


@contextlib.contextmanager
def failure_recorded(settings: Settings, run_id: str, step: str, attempt: int | None = None):
    """The one rule for a failed step: when a step of RUN_STEPS fails, the run is marked `failed`
    with the step and the error, and the error goes on. A run readers are served stays published
    (sql/runs.sql, finish); a failed later step fails nothing; a failed first load writes nothing."""
    try:
        yield
    except Exception as e:
        if step not in RUN_STEPS or not Path(settings.db).is_file():
            raise
        where = step if attempt is None else f"{step} try {attempt}"
        try:
            with db.transaction(settings.db) as conn:
                finish(conn, run_id, "failed", f"{where}: {type(e).__name__}: {e}"[:500])
        except Exception:
            log.exception("could not record the failure of run %s", run_id)
        raise
