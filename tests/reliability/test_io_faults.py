"""I/O faults on a small tmpfs: a full disk before and during publishing, a read-only file
system, and artifacts on a full disk. Each command fails with one line and a non-zero exit,
the published run stays as it was, and the next run after the fault succeeds."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from recjobs.settings import Settings
from support import checkerboard_dir, copy_db

SMALL = ["--factors", "4", "--iterations", "10", "--k", "5", "--n-similar", "3"]


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): the I/O fault cases need one (root)"
        )
    try:
        yield folder
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], capture_output=True)
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of `folder` up to leave_bytes free."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free - leave_bytes
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while free > 0:
                chunk = min(free, 1 << 20)
                f.write(b"\0" * chunk)
                f.flush()
                free -= chunk
    return filler


def recjobs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recjobs", "-q", *args], capture_output=True, text=True, timeout=600)


def one_line(result: subprocess.CompletedProcess, *expected: str) -> bool:
    lines = [line for line in result.stderr.strip().splitlines() if " WARNING " not in line]
    return (
        result.returncode != 0
        and len(lines) == 1
        and lines[0].startswith("Error: ")
        and any(e in lines[0] for e in expected)
        and "Traceback" not in result.stderr
    )


def published_state(db: Path) -> tuple:
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)  # immutable: also on a read-only mount
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return (
            conn.execute("SELECT run_id FROM published_run").fetchone(),
            conn.execute("SELECT count(*), total(score) FROM current_recommendations").fetchone(),
            conn.execute("SELECT count(*), total(score) FROM current_similar_movies").fetchone(),
        )
    finally:
        conn.close()


FULL = ("no space left on the device", "SQLite cannot read or write")


def test_a_full_disk_or_read_only_folder_fails_with_one_line_and_keeps_what_is_published(tmp_path, tally):
    data = checkerboard_dir(tmp_path / "data")
    cases = {}
    with tmpfs(tmp_path / "fs", "48m") as fs:
        db, store = fs / "recs.db", fs / "artifacts"
        where = ["--data-dir", str(data), "--db", str(db), "--artifacts", str(store)]
        assert recjobs("run", *where, *SMALL, "--run-id", "good").returncode == 0
        before = published_state(db)
        filler = fill(fs)
        cases["full disk: run"] = one_line(recjobs("run", *where, *SMALL), *FULL)
        cases["full disk: cold-start"] = one_line(recjobs("cold-start", *where[2:], "--liked", "1,2"), *FULL)
        cases["full disk: status"] = one_line(recjobs("status", "--db", str(db)), *FULL)
        cases["full disk: serve"] = one_line(recjobs("serve", "--db", str(db), "--port", "9"), "cannot read it")
        cases["full disk: published run kept"] = published_state(db) == before
        cases["full disk: no temporary files left"] = not [
            p for p in fs.rglob("*") if ".partial" in p.name or ".new." in p.name
        ]
        filler.unlink()
        cases["space freed: the next run publishes"] = (
            recjobs("run", *where, *SMALL, "--run-id", "after").returncode == 0
        )
        before = published_state(db)
        assert before[0] == ("after",)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        read_only = ("read-only", "SQLite cannot read or write", "Read-only file system")
        cases["read-only: run"] = one_line(recjobs("run", *where, *SMALL), *read_only)
        cases["read-only: cold-start"] = one_line(recjobs("cold-start", *where[2:], "--liked", "1,2"), *read_only)
        cases["read-only: published run kept"] = published_state(db) == before
    failed = [name for name, held in cases.items() if not held]
    tally("I/O faults", "full disk and read-only file system (tmpfs)", len(cases), len(cases) - len(failed))
    assert not failed, failed


def test_artifacts_on_a_full_disk_fail_the_run_in_one_line_and_record_why(tmp_path, tally):
    settings = Settings(data_dir=checkerboard_dir(tmp_path / "data"), db=tmp_path / "recs.db", artifacts=tmp_path / "a")
    with tmpfs(tmp_path / "fs", "8m") as fs:
        where = ["--data-dir", str(settings.data_dir), "--db", str(settings.db), "--artifacts", str(fs)]
        assert recjobs("run", *where, *SMALL, "--run-id", "good").returncode == 0
        before = published_state(settings.db)
        fill(fs)
        result = recjobs("run", *where, *SMALL, "--run-id", "starved")
        conn = sqlite3.connect(settings.db)
        record = conn.execute("SELECT status, status_reason FROM model_runs WHERE run_id = 'starved'").fetchone()
        conn.close()
        cases = {
            "one line": one_line(result, "no space left on the device"),
            # load saves its files before it records the run: a run is recorded failed, or not at all
            "run not left running": record is None or (record[0] == "failed" and "No space left" in record[1]),
            "published run kept": published_state(settings.db) == before,
        }
    failed = [name for name, held in cases.items() if not held]
    tally("I/O faults", "artifacts on a full disk", len(cases), len(cases) - len(failed))
    assert not failed, (failed, result.stderr[-500:], record)


def test_the_disk_filling_up_during_a_publish_rolls_it_back_whole(two_runs, tmp_path, tally):
    with tmpfs(tmp_path / "fs", "160m") as fs:
        db = copy_db(two_runs.db, fs / "recs.db")
        runs = type(two_runs)(two_runs.root, db, two_runs.artifacts, two_runs.data_dir, two_runs.expected)
        before = published_state(db)
        fill(fs, leave_bytes=2 << 20)  # 2 MB: the transaction needs more
        result = subprocess.run(runs.precompute_command("first"), capture_output=True, text=True, timeout=600)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        complete = all(runs.row_counts(conn, run) == expected for run, expected in runs.expected.items())
        conn.close()
        cases = {
            "one line": one_line(result, *FULL),
            "published run kept, both runs complete": published_state(db) == before and complete,
        }
        (fs / "filler").unlink()
        cases["space freed: the publish succeeds"] = runs.publish("first").returncode == 0
        cases["and serves the new run"] = published_state(db)[0] == ("first",)
    failed = [name for name, held in cases.items() if not held]
    tally("I/O faults", "disk full during a publish (ml-latest-small)", len(cases), len(cases) - len(failed))
    assert not failed, (failed, result.stderr[-800:])
