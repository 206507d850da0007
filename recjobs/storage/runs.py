"""The run record: ids, the model_runs row and the rule for a failed step."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
from pathlib import Path

from ..errors import StateError, storage_message
from ..settings import Settings
from . import db
from .artifacts import check_run_id

log = logging.getLogger(__name__)

# A run still 'running' this long after it started, with no process holding the run lock, was
# abandoned (a killed process): the next run marks it failed and removes its artifacts. The
# nightly DAG's own timeout is 6 hours.
ABANDONED_AFTER = dt.timedelta(hours=6)

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


def fail_if_running(settings: Settings, run_id: str, reason: str) -> bool:
    """Mark the run failed if it is still 'running' (its executor gave up on it: a killed task, a
    timed-out DAG run); a run a step already ended keeps its status and reason. True if marked."""
    if not Path(settings.db).is_file():
        return False
    with db.transaction(settings.db) as conn:
        done = conn.execute(db.query("runs.fail_if_running"), {"run_id": run_id, "reason": reason[:500], "now": now()})
        return done.rowcount == 1


def latest_id(settings: Settings) -> str | None:
    """The newest run in the database, or None (also when there is no database yet)."""
    if not Path(settings.db).is_file():
        return None
    with db.read_only(settings.db) as conn:
        return conn.execute(db.query("runs.latest_id")).scalar()


def configured_params(params_json: str) -> dict:
    """A run's configured model settings: its params_json without the blend it chose ("blend")."""
    params = json.loads(params_json)
    params.pop("blend", None)
    return params


def previous_blend(conn, run_id: str, settings: Settings) -> tuple[str, dict] | None:
    """(run id, blend record) of the newest published run recorded before this one, when it
    chose or kept a blend with these same configured settings; None otherwise."""
    source = conn.execute(db.query("runs.warm_start_source"), {"run_id": run_id}).first()
    if source is None:
        return None
    blend = json.loads(source.params_json).get("blend")
    if not blend or configured_params(source.params_json) != json.loads(json.dumps(settings.model_params())):
        return None
    return source.run_id, blend


def record_blend(conn, run_id: str, blend: dict, protocol: str) -> None:
    """The run's blend (model_runs.params_json "blend") and its gate's protocol."""
    conn.execute(
        db.query("runs.set_blend"), {"run_id": run_id, "blend_json": json.dumps(blend), "gate_protocol": protocol}
    )


def full_night(conn, run_id: str, settings: Settings) -> tuple[bool, str]:
    """Whether this night is a full one (the reference recipe and the cold-start protocol with
    their own fits), and why: forced, the first night, a change of model settings since the
    last full night, or full_evaluation_every nights since it."""
    if settings.full_evaluation:
        return True, "a full night: forced (full_evaluation)"
    if not conn.execute(db.query("runs.published_before"), {"run_id": run_id}).scalar():
        return True, "a full night: the first night (no run published before it)"
    last = conn.execute(db.query("runs.last_full_night"), {"run_id": run_id}).first()
    if last is None:
        return True, "a full night: no full night before it"
    if configured_params(last.params_json) != json.loads(json.dumps(settings.model_params())):
        return True, f"a full night: the model settings changed since the full night {last.run_id}"
    night = last.nights_since + 1
    if night >= settings.full_evaluation_every:
        return True, f"a full night: night {night} since the full night {last.run_id} (full_evaluation_every)"
    return False, f"a usual night: night {night} of {settings.full_evaluation_every} since the full night {last.run_id}"


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
        if step not in RUN_STEPS + ("score_shard",) or not Path(settings.db).is_file():
            raise
        where = step if attempt is None else f"{step} try {attempt}"
        try:
            with db.transaction(settings.db) as conn:
                finish(conn, run_id, "failed", f"{where}: {type(e).__name__}: {e}"[:500])
        except Exception as record_error:  # e.g. the disk is full: say so in one line, raise the first error
            log.warning("could not record the failure of run %s: %s", run_id, storage_message(record_error))
        raise


AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority(settings: Settings) -> int:
    """Lower this process's CPU priority to settings.job_nice (never raise it); the niceness now.
    With Linux's autogroup scheduling a process's nice only counts inside its session, so the
    session's autogroup is lowered too: a publish then leaves a server on the same cores its
    speed (README, Serving). Call it before heavy imports: threads started later inherit it."""
    current = os.nice(0)
    if settings.job_nice > current:
        current = os.nice(settings.job_nice - current)
    with contextlib.suppress(OSError):  # no autogroups here, or not allowed: nice alone
        found = re.search(r"\bnice\s+(-?\d+)", AUTOGROUP.read_text())
        if found and settings.job_nice > int(found.group(1)):
            AUTOGROUP.write_text(str(settings.job_nice))
    return current


def lock_path(settings: Settings) -> Path:
    return Path(settings.db).with_name(Path(settings.db).name + ".lock")


@contextlib.contextmanager
def run_lock(settings: Settings, run_id: str):
    """One process at a time works on the runs of a database: it holds an exclusive lock on
    <db>.lock, which says which run and which process. Another process trying meanwhile stops at
    once with "run X is in progress (pid N)". The lock goes with the process, however it ends."""
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "? (pid ?)"
            raise StateError(
                f"{settings.db}: run {holder} is in progress; wait for it to end, or stop that process"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{run_id} (pid {os.getpid()})".encode(), 0)
        clear_gone_owners(settings, run_id)  # a killed `recjobs run` is failed by the next command
        yield
    finally:
        os.close(fd)


def process_identity(pid: int) -> str | None:
    """The boot id and start time of a live process (Linux's /proc), so a reused pid is told
    apart; None when no such process runs. Elsewhere, the pid alone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{boot}:{fields[19]}"  # field 22 of stat: start time after boot, in clock ticks
    except FileNotFoundError:
        if Path("/proc/self/stat").is_file():
            return None  # Linux, and no such process
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return f"pid:{pid}"


def record_owner(conn, run_id: str) -> None:
    """This process executes the run from start to end (`recjobs run`)."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_started": process_identity(os.getpid())}
    conn.execute(db.query("runs.record_owner"), {"run_id": run_id, **me})


def _end_abandoned(conn, settings: Settings, abandoned, reason) -> None:
    root = Path(settings.artifacts).resolve()
    for old_id, artifacts_dir in abandoned:
        finish(conn, old_id, "failed", reason(old_id))
        folder = Path(artifacts_dir or root / old_id).resolve()
        if folder.parent == root and folder.name == old_id:  # never anything outside the artifacts folder
            shutil.rmtree(folder, ignore_errors=True)
        log.warning("run %s was abandoned: marked failed, artifacts removed", old_id)


def gone_owners(conn, run_id: str) -> list[tuple[str, str, int]]:
    """(run id, artifacts folder, pid) of the runs still 'running' whose process on this host is gone."""
    rows = conn.execute(db.query("runs.owned_running"), {"host": socket.gethostname(), "run_id": run_id}).all()
    return [(r.run_id, r.artifacts_dir, r.pid) for r in rows if process_identity(r.pid) != r.process_started]


def clear_abandoned(conn, settings: Settings, run_id: str) -> list[str]:
    """Mark failed the runs left 'running' by processes that are gone (the caller holds the run
    lock) and remove their artifacts folders; returns their ids. A run whose executing process is
    recorded (`recjobs run`) is abandoned as soon as that process is gone; any other once it is
    ABANDONED_AFTER old."""
    gone = gone_owners(conn, run_id)
    pids = {old_id: pid for old_id, _, pid in gone}
    host = socket.gethostname()
    _end_abandoned(
        conn,
        settings,
        [(old_id, folder) for old_id, folder, _ in gone],
        lambda old_id: f"abandoned: the process that ran it (pid {pids[old_id]} on {host}) is gone",
    )
    before = (dt.datetime.now(dt.UTC) - ABANDONED_AFTER).isoformat(timespec="seconds")
    old = [tuple(row) for row in conn.execute(db.query("runs.abandoned"), {"run_id": run_id, "before": before}).all()]
    _end_abandoned(
        conn,
        settings,
        old,
        lambda _: f"abandoned: still running {ABANDONED_AFTER} after it started, with no process holding the run lock",
    )
    return [g[0] for g in gone] + [old_id for old_id, _ in old]


def clear_gone_owners(settings: Settings, run_id: str) -> list[str]:
    """What clear_abandoned does for runs whose recorded process is gone, for any command that
    takes the run lock; writes only when there is such a run (read-only otherwise)."""
    if not Path(settings.db).is_file():
        return []
    try:
        conn = db.plain_connect(settings.db, read_only=True)
        try:
            where = {"host": socket.gethostname(), "run_id": run_id}
            rows = conn.execute(db.sql("runs.owned_running"), where).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:  # an old database without run_owners, or a damaged one: the job says so
        return []
    if not any(process_identity(pid) != started for _, pid, started, _ in rows):
        return []
    with db.transaction(settings.db) as conn:
        return clear_abandoned(conn, settings, run_id)
