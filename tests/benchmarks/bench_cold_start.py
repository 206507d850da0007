"""Benchmark of `recjobs cold-start`: whole-process wall time and the in-process function.

    python tests/benchmarks/bench_cold_start.py [--data-dir data_small] [--runs 20] [--calls 1000]

Builds a published run on the data set in a temporary folder (or uses --db/--artifacts,
copying the database so the benchmark's requests land in the copy), then reports medians:

- the whole process: the `recjobs -q cold-start --liked 296,318,593` command, run --runs times,
  side by side with the import floor (`python -c "import numpy, click, sqlite3"`, what the
  command needs), the old floor with SQLAlchemy, and Python's own start; the ratio of medians;
- the in-process function `recjobs.jobs.cold_start.cold_start` (request stored), --calls times,
  after one warm-up call; the scoring alone (no database); and `answer()` as the server's
  cold-start route calls it (one snapshot, nothing stored).

Targets: whole process under 0.5 s, in-process under 5 ms, on ml-latest-small.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[2]
LIKED = "296,318,593"


def timed_runs(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run of a command."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return walls, cpus


def describe(name: str, seconds: list[float], unit: str = "s", scale: float = 1.0) -> str:
    values = sorted(v * scale for v in seconds)
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return (
        f"{name:<44} median {statistics.median(values):8.3f} {unit}   min {values[0]:8.3f}   "
        f"p95 {p95:8.3f}   (n={len(values)})"
    )


def recjobs_command() -> list[str]:
    script = Path(sys.executable).parent / "recjobs"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "recjobs.cli"]


IMPORTS_SHOWN = ("numpy", "click", "sqlite3", "recjobs", "recjobs.settings", "recjobs.cli", "recjobs.jobs.cold_start")


def print_import_times(arguments: list[str], runs: int) -> None:
    """Median cumulative import time (`python -X importtime`) of the command's imports named in
    IMPORTS_SHOWN, each with what it imports first, and of all its imports together."""
    seen: dict[str, list[float]] = {name: [] for name in (*IMPORTS_SHOWN, "all imports")}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "recjobs", *arguments], capture_output=True, text=True
        )
        total = 0.0
        for line in done.stderr.splitlines():
            fields = line.removeprefix("import time:").split("|")
            if not line.startswith("import time:") or not fields[1].strip().isdigit():
                continue
            name = fields[2].removeprefix(" ")
            if name.strip() in seen:  # at any depth: its first import, with what it imports
                seen[name.strip()].append(int(fields[1]) / 1000)
            if not name.startswith(" "):  # top level: the sum of these is every import
                total += int(fields[1])
        seen["all imports"].append(total / 1000)
    for name, values in seen.items():
        if values:
            print(describe(f"import {name} (-X importtime, cumulative)", values, "ms", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data_small")
    parser.add_argument("--db", type=Path, help="an existing database with a published run")
    parser.add_argument("--artifacts", type=Path, help="its artifacts folder")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()

    from recjobs.jobs import cold_start as cs
    from recjobs.method import bundle as cb
    from recjobs.method import scoring
    from recjobs.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-cold-start-") as scratch:
        scratch = Path(scratch)
        if args.db:
            with sqlite3.connect(args.db) as src, sqlite3.connect(scratch / "recs.db") as dst:
                src.backup(dst)
            settings = Settings(db=scratch / "recs.db", artifacts=args.artifacts or Path("artifacts"))
        else:
            from recjobs import pipeline

            settings = Settings(data_dir=args.data_dir, db=scratch / "recs.db", artifacts=scratch / "artifacts")
            print(f"building a published run on {args.data_dir} ...", flush=True)
            pipeline.run(settings, "bench")
        cs.cold_start(settings, LIKED.split(","))  # writes the run's bundle if it is missing

        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        command = recjobs_command() + [
            "-q",
            "cold-start",
            "--db",
            str(settings.db),
            "--artifacts",
            str(settings.artifacts),
            "--liked",
            LIKED,
        ]
        # side by side: each round runs the command and every floor once, so load hits all alike
        floors = {
            "import floor: python -c 'import numpy, click, sqlite3'": "import numpy, click, sqlite3",
            "python -c 'import numpy, sqlalchemy' (the old floor)": "import numpy, sqlalchemy",
            "python -c pass": "pass",
        }
        walls, cpus, floor_walls = [], [], {name: [] for name in floors}
        for _ in range(args.runs):
            wall, cpu = timed_runs(command, 1)
            walls += wall
            cpus += cpu
            for name, code in floors.items():
                floor_walls[name] += timed_runs([sys.executable, "-c", code], 1)[0]
        print(describe("recjobs cold-start (whole process, wall)", walls))
        print(describe("recjobs cold-start (whole process, CPU)", cpus))
        for name, values in floor_walls.items():
            print(describe(f"{name} (wall)", values))
        import_floor = statistics.median(next(iter(floor_walls.values())))
        print(f"whole process / import floor: {statistics.median(walls) / import_floor:.2f}x (medians)")
        print_import_times(command[command.index("-q") :], args.runs)

        liked = [int(i) for i in LIKED.split(",")]
        calls = []
        for _ in range(args.calls):
            started = time.perf_counter()
            cs.cold_start(settings, liked, 10)
            calls.append(time.perf_counter() - started)
        print(describe("cold_start() in process, request stored", calls, "ms", 1000))

        run_id = cs.cold_start(settings, liked).run_id
        with sqlite3.connect(settings.db) as conn:
            artifacts_dir = conn.execute("SELECT artifacts_dir FROM model_runs WHERE run_id = ?", (run_id,)).fetchone()[
                0
            ]
        bundle = cb.read_bundle(run_id, cs.served_run_dir(settings.artifacts, run_id, artifacts_dir))
        rows = cs.np.searchsorted(bundle.movie_ids, liked)
        scoring_times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            _, scores = cb.scores_for(bundle, rows)
            scoring.top_k(scores, rows, 10)
            scoring_times.append(time.perf_counter() - started)
        print(describe("scoring alone (fold-in, blend, top 10)", scoring_times, "ms", 1000))

        from recjobs.storage import db

        conn, answers = db.plain_connect(settings.db, read_only=True), []
        for _ in range(args.calls):
            started = time.perf_counter()
            with db.snapshot(conn):
                cs.answer(conn, settings.artifacts, tuple(liked), 10, "recs")
            answers.append(time.perf_counter() - started)
        conn.close()
        print(describe("answer() as the server calls it (nothing stored)", answers, "ms", 1000))
        if not args.db:
            shutil.rmtree(scratch / "artifacts", ignore_errors=True)


if __name__ == "__main__":
    main()
