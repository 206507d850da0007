"""The recjobs command: one-line errors, non-zero exit, the published run untouched."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from recjobs.cli import cli
from support import REPO

HEADER = "userId,movieId,rating,timestamp\n"


def recjobs(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "recjobs", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def served(db):
    con = sqlite3.connect(db)
    try:
        return (
            con.execute("SELECT * FROM published_run").fetchall(),
            con.execute("SELECT count(*), sum(movie_id * rank) FROM current_recommendations").fetchone(),
        )
    finally:
        con.close()


def test_every_command_has_help():
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert command.help and command.help.strip(), name
        assert len(result.output.splitlines()) > 3


def test_run_prints_a_summary(small_published):
    s = small_published
    out = recjobs("run", "--data-dir", s.data_dir, "--db", s.db, "--artifacts", s.artifacts, "--run-id", "cli")
    assert out.returncode == 0, out.stderr
    assert "run cli: published" in out.stdout
    assert "Recall@10" in out.stdout and str(s.db) in out.stdout


def test_environment_sets_the_paths(published_copy):
    s = published_copy
    out = recjobs("rollback", env={"RECJOBS_DB": str(s.db)})
    assert out.returncode == 1
    assert out.stderr.strip() == "Error: no earlier published run to roll back to; the last 3 published runs are kept"


BAD = {
    "missing ratings.csv": (None, "ratings.csv: file not found"),
    "renamed column": ("userId,movieId,stars,timestamp\n1,1,4.0,1\n", "missing column 'rating'"),
    "non-numeric id": (HEADER + "1,1,4.0,1\nabc,2,4.0,2\n", "line 3: userId 'abc'"),
    "negative id": (HEADER + "1,1,4.0,1\n1,-5,4.0,2\n", "line 3: movieId -5"),
    "rating NaN": (HEADER + "1,1,4.0,1\n1,2,NaN,2\n", "line 3: rating"),
    "rating out of range": (HEADER + "1,1,4.0,1\n1,2,5.5,2\n", "line 3: rating 5.5"),
    "rating not a half": (HEADER + "1,1,4.0,1\n1,2,4.2,2\n", "line 3: rating 4.2"),
    "bad timestamp": (HEADER + "1,1,4.0,1\n1,2,4.0,soon\n", "line 3: timestamp 'soon'"),
    "duplicate pair": (HEADER + "1,1,4.0,1\n1,1,4.5,2\n", "lines 2 and 3: user 1 rated movie 1 twice"),
    "empty file": ("", "ratings.csv: file is empty"),
    "header only": (HEADER, "no data rows"),
    "no user with 2 positives": (HEADER + "1,1,4.0,1\n1,2,2.0,2\n", "no user has 2 ratings >= 4.0"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_keeps_the_published_run(case, published_copy, tmp_path):
    content, message = BAD[case]
    data = tmp_path / "bad"
    shutil.copytree(published_copy.data_dir, data)
    if content is None:
        (data / "ratings.csv").unlink()
    else:
        (data / "ratings.csv").write_text(content)
    before = served(published_copy.db)
    out = recjobs("run", "--data-dir", data, "--db", published_copy.db, "--artifacts", published_copy.artifacts)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr
    assert lines[-1].startswith("Error: ") and message in lines[-1], out.stderr
    assert served(published_copy.db) == before


def test_bad_setting_is_one_line(published_copy):
    out = recjobs("run", "--db", published_copy.db, "--k", "0")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "Error: setting k=0 is out of range; see `recjobs run --help`"


def test_unknown_movie_ratings_are_dropped_not_fatal(published_copy, tmp_path):
    data = tmp_path / "extra"
    shutil.copytree(published_copy.data_dir, data)
    (data / "incoming").mkdir(exist_ok=True)
    (data / "incoming" / "late.csv").write_text(HEADER + "1,999999,4.0,1700000000\n")
    out = recjobs(
        "load",
        "--data-dir",
        data,
        "--db",
        published_copy.db,
        "--artifacts",
        published_copy.artifacts,
        "--run-id",
        "extra",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert '"n_dropped_ratings": 1' in out.stdout
    assert "dropped 1 ratings" in out.stderr


def test_status_shows_the_published_run(published_settings, tmp_path):
    out = recjobs("status", "--db", published_settings.db)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("published run first (served since ")
    assert f"{610 * published_settings.k} recommendations for 610 users" in out.stdout
    missing = recjobs("status", "--db", tmp_path / "none.db")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"Error: {tmp_path / 'none.db'}: no database; run `recjobs run` first"


def test_status_reads_without_writing(tmp_path):
    """A read command opens the database read-only: an empty file stays empty (it used to get
    the whole schema), and a real database's bytes do not change."""
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    out = recjobs("status", "--db", empty)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "not a recjobs database" in out.stderr and empty.read_bytes() == b""


def test_storage_errors_become_one_line_that_says_what_to_do():
    import errno
    import sqlite3

    from recjobs.errors import storage_message

    full = OSError(errno.ENOSPC, "No space left on device", "/data/artifacts/x/ratings.npz")
    assert storage_message(full) == (
        "no space left on the device ([Errno 28] No space left on device: '/data/artifacts/x/ratings.npz'); "
        "free some space and run again: what is published is unchanged"
    )
    assert storage_message(sqlite3.OperationalError("database or disk is full"), "/d/recs.db").startswith(
        "/d/recs.db: no space left on the device (database or disk is full)"
    )
    read_only = storage_message(OSError(errno.EROFS, "Read-only file system"))
    assert read_only.startswith("cannot write: the file system is read-only")
    assert "-wal and -shm" in storage_message(sqlite3.OperationalError("disk I/O error"), "/d/recs.db")
    assert storage_message(PermissionError(errno.EACCES, "Permission denied", "/x")) == (
        "PermissionError: [Errno 13] Permission denied: '/x'"
    )
