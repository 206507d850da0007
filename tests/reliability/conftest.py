"""The reliability suite (`make test-reliability`): crashes, I/O faults, bad input files and
hostile clients. Every test here is marked `reliability`, so the default run leaves it out; it
runs in one process (its timings and kills would disturb each other), and each test adds its
counts to the table printed at the end."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recjobs.jobs.evaluate import evaluate
from recjobs.jobs.load import load
from recjobs.jobs.precompute import precompute
from recjobs.jobs.split import split
from recjobs.jobs.train import train
from support import copy_db

HERE = Path(__file__).resolve().parent
QUICK = {"factors": 16, "iterations": 5, "gate_tolerance": 0.5}  # run "second": a quicker model
TALLY = pytest.StashKey[list]()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.reliability)


def pytest_configure(config):
    config.stash[TALLY] = []


@pytest.fixture(scope="session")
def tally(request):
    """tally(area, case, tried, held, **figures): one line of the suite's table of counts."""
    rows = request.config.stash[TALLY]

    def add(area: str, case: str, tried: int, held: int, **figures) -> None:
        rows.append((area, case, tried, held, figures))

    return add


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(TALLY, [])
    if not rows:
        return
    terminalreporter.section("reliability counts")
    width = max(len(f"{area}: {case}") for area, case, *_ in rows)
    for area, case, tried, held, figures in rows:
        extra = ", ".join(f"{name} {value}" for name, value in figures.items())
        terminalreporter.write_line(f"{f'{area}: {case}':<{width}}  tried {tried:>6}  held {held:>6}  {extra}")
    tried, held = sum(r[2] for r in rows), sum(r[3] for r in rows)
    terminalreporter.write_line(f"{'all':<{width}}  tried {tried:>6}  held {held:>6}")


@dataclass
class TwoRuns:
    """A database holding two complete published runs on ml-latest-small: 'first' (the default
    model) and 'second' (a quicker one, published last), with their artifacts."""

    root: Path
    db: Path
    artifacts: Path
    data_dir: Path
    expected: dict = field(default_factory=dict)  # run id -> (recommendation rows, similar-movie rows)

    def precompute_command(self, run_id: str) -> list[str]:
        args = [sys.executable, "-m", "recjobs", "-q", "precompute", "--run-id", run_id]
        args += ["--data-dir", str(self.data_dir), "--db", str(self.db), "--artifacts", str(self.artifacts)]
        if run_id == "second":
            args += [f"--{name.replace('_', '-')}={value}" for name, value in QUICK.items()]
        return args

    def publish(self, run_id: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.precompute_command(run_id), capture_output=True, text=True, timeout=600)

    def row_counts(self, conn, run_id: str) -> tuple[int, int]:
        recs = conn.execute("SELECT count(*) FROM recommendations WHERE run_id = ?", (run_id,)).fetchone()[0]
        similar = conn.execute("SELECT count(*) FROM similar_movies WHERE run_id = ?", (run_id,)).fetchone()[0]
        return recs, similar


def build_two_runs(published_settings, root: Path) -> TwoRuns:
    db = copy_db(published_settings.db, root / "recs.db")
    artifacts = shutil.copytree(published_settings.artifacts, root / "artifacts")
    runs = TwoRuns(root, db, artifacts, Path(published_settings.data_dir))
    settings = published_settings.replace(db=db, artifacts=artifacts, **QUICK)
    for step in (load, split, train, evaluate, precompute):
        step(settings, "second")
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT run_id FROM published_run").fetchone()[0] == "second"
        runs.expected = {run: runs.row_counts(conn, run) for run in ("first", "second")}
    finally:
        conn.close()
    assert all(recs > 0 and similar > 0 for recs, similar in runs.expected.values()), runs.expected
    return runs


@pytest.fixture(scope="module")
def two_runs(published_settings, tmp_path_factory) -> TwoRuns:
    return build_two_runs(published_settings, tmp_path_factory.mktemp("two-runs"))
