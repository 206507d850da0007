"""The run record: ids, the per-run artifacts folder and the model_runs row."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

from . import db
from .errors import ConfigError, StateError
from .settings import Settings

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id or ""):
        raise ConfigError(f"run id {run_id!r} is not valid; expected 1-100 letters, digits, '_', '.' or '-'")
    return run_id


def run_dir(settings: Settings, run_id: str) -> Path:
    return Path(settings.artifacts) / check_run_id(run_id)


def start(conn, run_id: str, settings: Settings, directory: Path, data_sha256: str) -> None:
    conn.execute(db.query("runs.start"), {
        "run_id": run_id, "now": now(), "params_json": json.dumps(settings.model_params(), sort_keys=True),
        "data_sha256": data_sha256, "artifacts_dir": str(Path(directory).resolve()),
    })


def update(conn, run_id: str, **values) -> None:
    """Set one group of columns; the group is chosen by the names given."""
    groups = {
        "set_load_counts": {"n_ratings", "n_dropped_ratings"},
        "set_split_counts": {"n_train", "n_test_users"},
        "set_model_counts": {"n_users", "n_items"},
        "set_metrics": {"recall_at_10", "ndcg_at_10", "popularity_recall_at_10", "popularity_ndcg_at_10"},
    }
    name = next(n for n, cols in groups.items() if cols == set(values))
    conn.execute(db.query(f"runs.{name}"), {"run_id": run_id, **values})


def get(conn, run_id: str) -> dict:
    row = conn.execute(db.query("runs.get"), {"run_id": run_id}).mappings().first()
    if row is None:
        raise StateError(f"run {run_id!r} is not in model_runs; run `recjobs load` first")
    return dict(row)


def record_seconds(settings: Settings, run_id: str, step: str, seconds: float) -> None:
    with db.transaction(settings.db) as conn:
        conn.execute(db.query("runs.record_seconds"), {"run_id": run_id, "step": step, "seconds": round(seconds, 3)})


def finish(conn, run_id: str, status: str, reason: str | None = None) -> None:
    conn.execute(db.query("runs.finish"), {"run_id": run_id, "status": status, "reason": reason, "now": now()})


def mark_failed(settings: Settings, run_id: str, reason: str) -> None:
    """Record a failed step; a run readers are served stays published."""
    with db.transaction(settings.db) as conn:
        finish(conn, run_id, "failed", reason[:500])


def write_atomically(path: Path, write) -> Path:
    """Call write(temp_path), then rename the temp file over `path`: a reader of `path`
    sees the old file or the new one, never a half-written one."""
    path = Path(path)
    temp = path.with_name(f".{path.stem}.partial{path.suffix}")
    write(temp)
    os.replace(temp, path)
    return path


def require_file(path: Path, step: str) -> Path:
    if not Path(path).is_file():
        raise StateError(f"{path}: not found; run `recjobs {step}` for this run id first")
    return Path(path)
