"""Benchmark of `recjobs cold-start`: whole-process wall time and the in-process function.

    python tests/benchmarks/bench_cold_start.py [--data-dir data_small] [--runs 20] [--calls 1000]

Builds a published run on the data set in a temporary folder (or uses --db/--artifacts,
copying the database so the benchmark's requests land in the copy), then reports medians:

- the whole process: the `recjobs -q cold-start --liked 296,318,593` command, run --runs times;
  next to it the floor of `python -c "import numpy, sqlalchemy"` and Python's own start;
- the in-process function `recjobs.cold_start.cold_start` (request stored), --calls times,
  after one warm-up call, and the scoring alone (no database).

Targets (issue 6): whole process under 0.5 s, in-process under 5 ms, on ml-latest-small.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data_small")
    parser.add_argument("--db", type=Path, help="an existing database with a published run")
    parser.add_argument("--artifacts", type=Path, help="its artifacts folder")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()

    from recjobs import bundle as cb
    from recjobs import cold_start as cs
    from recjobs import scoring
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
        walls, cpus = timed_runs(command, args.runs)
        print(describe("recjobs cold-start (whole process, wall)", walls))
        print(describe("recjobs cold-start (whole process, CPU)", cpus))
        floor, _ = timed_runs([sys.executable, "-c", "import numpy, sqlalchemy"], args.runs)
        print(describe("python -c 'import numpy, sqlalchemy' (wall)", floor))
        bare, _ = timed_runs([sys.executable, "-c", "pass"], args.runs)
        print(describe("python -c pass (wall)", bare))

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
        scoring = []
        for _ in range(args.calls):
            started = time.perf_counter()
            _, scores = cb.scores_for(bundle, rows)
            scoring.top_k(scores, rows, 10)
            scoring.append(time.perf_counter() - started)
        print(describe("scoring alone (fold-in, blend, top 10)", scoring, "ms", 1000))
        if not args.db:
            shutil.rmtree(scratch / "artifacts", ignore_errors=True)


if __name__ == "__main__":
    main()
