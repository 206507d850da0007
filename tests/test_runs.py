"""The run record: one process at a time per database, abandoned runs cleared, one failure rule."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from recjobs.errors import StateError
from recjobs.jobs.load import load
from recjobs.settings import Settings
from recjobs.storage import runs
from support import REPO


def test_a_second_run_on_the_same_database_stops_at_once_and_names_the_first(tiny_settings):
    with runs.run_lock(tiny_settings, "nightly-1"):
        with pytest.raises(StateError, match=rf"run nightly-1 \(pid {os.getpid()}\) is in progress"):
            with runs.run_lock(tiny_settings, "other"):
                pass
        started = time.monotonic()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "recjobs",
                "run",
                "--data-dir",
                str(tiny_settings.data_dir),
                "--db",
                str(tiny_settings.db),
                "--artifacts",
                str(tiny_settings.artifacts),
                "--run-id",
                "second",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert out.returncode == 1 and time.monotonic() - started < 30
        assert out.stderr.strip() == (
            f"Error: {tiny_settings.db}: run nightly-1 (pid {os.getpid()}) is in progress; "
            "wait for it to end, or stop that process"
        )
        assert not tiny_settings.db.exists()  # the second run wrote nothing
    with runs.run_lock(tiny_settings, "after"):  # released with its holder
        pass


def test_the_lock_goes_with_a_killed_process(tiny_settings):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from recjobs import settings; from recjobs.storage import runs; "
            f"s = settings.Settings(db={str(tiny_settings.db)!r}); "
            "ctx = runs.run_lock(s, 'killed'); ctx.__enter__(); print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateError, match=rf"run killed \(pid {holder.pid}\) is in progress"):
            with runs.run_lock(tiny_settings, "mine"):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with runs.run_lock(tiny_settings, "mine"):
        pass


def test_the_next_run_clears_runs_abandoned_by_killed_processes(tiny_settings):
    load(tiny_settings, "killed")
    load(tiny_settings, "recent")
    old = (dt.datetime.now(dt.UTC) - runs.ABANDONED_AFTER - dt.timedelta(minutes=1)).isoformat(timespec="seconds")
    with sqlite3.connect(tiny_settings.db) as conn:
        conn.execute("UPDATE model_runs SET started_at = ? WHERE run_id = 'killed'", (old,))
    killed_dir = tiny_settings.artifacts / "killed"
    assert killed_dir.is_dir()

    load(tiny_settings, "next")
    with sqlite3.connect(tiny_settings.db) as conn:
        status = dict(conn.execute("SELECT run_id, status FROM model_runs"))
        reason = conn.execute("SELECT status_reason FROM model_runs WHERE run_id = 'killed'").fetchone()[0]
    assert status == {"killed": "failed", "recent": "running", "next": "running"}
    assert reason.startswith("abandoned") and not killed_dir.exists()
    assert (tiny_settings.artifacts / "recent").is_dir()


def test_batch_jobs_lower_their_cpu_priority_and_never_raise_it(tmp_path):
    script = (
        "import os; from recjobs.storage import runs; from recjobs.settings import Settings; "
        "print(runs.lower_priority(Settings(job_nice=7)), runs.lower_priority(Settings(job_nice=3)), os.nice(0)); "
        "print(repr(open('/proc/self/autogroup').read().strip()) if os.path.exists('/proc/self/autogroup') else 'none')"
    )
    # its own session, so its own autogroup: the test session's priority stays as it is
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, start_new_session=True
    )
    niceness, autogroup = done.stdout.splitlines()
    assert niceness.split() == ["7", "7", "7"]  # the second call keeps 7: a job never raises its priority
    # the session's share is lowered too, where there are autogroups (a container's task may be in none: '')
    assert autogroup in ("none", "''") or autogroup.endswith("nice 7'")


@pytest.mark.parametrize("shown", ["", "autogroup not enabled\n", "/autogroup-12 nice 0\n"])
def test_lower_priority_reads_whatever_the_autogroup_file_shows(tmp_path, monkeypatch, shown):
    fake = tmp_path / "autogroup"
    fake.write_text(shown)
    monkeypatch.setattr(runs, "AUTOGROUP", fake)
    monkeypatch.setattr(runs.os, "nice", lambda increment: 0)  # this process keeps its priority
    runs.lower_priority(Settings(job_nice=9))
    assert fake.read_text() == ("9" if "nice" in shown else shown)  # written only where a group was shown


def test_the_cli_steps_and_run_lower_their_priority_first(tiny_settings, monkeypatch):
    from click.testing import CliRunner

    from recjobs.cli import cli
    from recjobs.storage import runs

    asked = []
    monkeypatch.setattr(runs, "lower_priority", lambda settings: asked.append(settings.job_nice))
    where = ["--data-dir", str(tiny_settings.data_dir), "--db", str(tiny_settings.db)]
    where += ["--artifacts", str(tiny_settings.artifacts), "--job-nice", "12"]
    assert CliRunner().invoke(cli, ["-q", "load", *where, "--run-id", "a"]).exit_code == 0
    assert CliRunner().invoke(cli, ["-q", "run", *where, "--factors", "4", "--iterations", "3"]).exit_code in (0, 1)
    assert asked == [12, 12]
