"""Every bad input file under tests/data/bad/ (one folder per case: the files that replace
_base/'s, expected.txt with the message, `remove: NAME` lines for files taken away) makes
`recjobs run` exit non-zero with one line naming the problem, and leaves the published run
as it was."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from recjobs.settings import Settings
from support import small_published_settings

BAD = Path(__file__).resolve().parent.parent / "data" / "bad"
CASES = sorted(p.name for p in BAD.iterdir() if p.is_dir() and p.name != "_base")


def case_folder(name: str, target: Path) -> tuple[Path, str]:
    """_base/ with the case's files laid over it; the expected message."""
    shutil.copytree(BAD / "_base", target)
    lines = (BAD / name / "expected.txt").read_text(encoding="utf-8").splitlines()
    for path in (BAD / name).rglob("*"):
        relative = path.relative_to(BAD / name)
        if path.is_file() and relative.name != "expected.txt":
            destination = target / relative
            if destination.parent == target / relative.parts[0] and len(relative.parts) > 1:
                (target / relative.parts[0]).unlink(missing_ok=True)  # a folder where a file was
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    for line in lines[1:]:
        (target / line.removeprefix("remove: ")).unlink()
    return target, lines[0]


def published_state(db: Path) -> tuple:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return (
            conn.execute("SELECT run_id FROM published_run").fetchone(),
            conn.execute("SELECT count(*), total(rating), total(rated_at) FROM ratings").fetchone(),
            conn.execute("SELECT count(*), total(score) FROM current_recommendations").fetchone(),
            conn.execute("SELECT count(*), group_concat(title, '|') FROM movies").fetchone(),
        )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Settings:
    return small_published_settings(tmp_path_factory.mktemp("bad-inputs"), "good")


def test_there_are_at_least_30_cases_each_with_its_message():
    assert len(CASES) >= 30
    assert all((BAD / name / "expected.txt").read_text().strip() for name in CASES)


def test_every_bad_input_file_is_one_line_and_changes_nothing_published(published, tally, tmp_path):
    before = published_state(published.db)
    outcomes = {}
    for name in CASES:
        folder, expected = case_folder(name, tmp_path / name)
        result = subprocess.run(
            [sys.executable, "-m", "recjobs", "-q", "run", "--data-dir", str(folder), "--db", str(published.db)]
            + ["--artifacts", str(published.artifacts), "--factors", "4", "--iterations", "10", "--k", "5"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [line for line in result.stderr.strip().splitlines() if " WARNING " not in line]  # warnings may precede
        outcomes[name] = (
            result.returncode != 0
            and len(lines) == 1
            and lines[0].startswith("Error: ")
            and expected in lines[0]
            and len(lines[0]) < 600
            and "Traceback" not in result.stderr
            and published_state(published.db) == before
        )
        if not outcomes[name]:
            outcomes[name] = (result.returncode, expected, result.stderr[-600:])
    failed = {name: outcome for name, outcome in outcomes.items() if outcome is not True}
    tally("bad input", "files under tests/data/bad/", len(CASES), len(CASES) - len(failed))
    assert not failed, failed
