"""Benchmark of `recjobs refresh` run directly: 1,000 new ratings from 500 known users.

    python tests/benchmarks/bench_refresh.py --db artifacts/recs.db [--artifacts artifacts] [--repeats 5]

Each repeat copies the published database (the refresh writes into the copy), lands one file
of --ratings ratings from --users users in a fresh incoming/ (each rating a movie from the top
10 of the user's list, 5 stars, so every list must change), and times:

- the whole `recjobs -q refresh --json` command (what the DAG's task and an operator run);
- the refresh's own seconds (RefreshResult.seconds: reading the files, histories, fold-in,
  scoring, the one write transaction), and users refolded per second from it;
- a second `recjobs refresh` with nothing new (the DAG's usual minute).

It stops with an error if any rated movie is still in its user's list after the refresh.

Medians over the repeats. Target: at most 5 s for 1,000 ratings at 25M ratings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy (SQLite's backup API), WAL folded in."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def new_ratings(db: Path, n_ratings: int, n_users: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    with sqlite3.connect(db) as con:
        users = [u for (u,) in con.execute("SELECT DISTINCT user_id FROM current_recommendations ORDER BY user_id")]
        chosen = rng.sample(users, min(n_users, len(users)))
        per_user = -(-n_ratings // len(chosen))
        now = int(time.time())
        lines = []
        for user in chosen:
            top = [
                m
                for (m,) in con.execute(
                    "SELECT movie_id FROM current_recommendations WHERE user_id = ? AND rank <= 10 ORDER BY rank",
                    (user,),
                )
            ]
            lines += [f"{user},{movie},5.0,{now}" for movie in rng.sample(top, min(per_user, len(top)))]
    return lines[:n_ratings]


def still_listed(db: Path, lines: list[str]) -> int:
    """How many of the new ratings' movies are still in their user's served list."""
    pairs = [tuple(int(v) for v in line.split(",")[:2]) for line in lines]
    with sqlite3.connect(db) as con:
        return sum(
            con.execute(
                "SELECT count(*) FROM current_recommendations WHERE user_id = ? AND movie_id = ?", pair
            ).fetchone()[0]
            for pair in pairs
        )


def refresh_command(db: Path, artifacts: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "recjobs",
        "-q",
        "refresh",
        "--json",
        "--db",
        str(db),
        "--artifacts",
        str(artifacts),
        "--data-dir",
        str(data_dir),
    ]


def timed(command: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--artifacts", type=Path, default=None, help="default: the folder model_runs records")
    parser.add_argument("--ratings", type=int, default=1000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with sqlite3.connect(args.db) as con:
        (n_ratings,) = con.execute("SELECT count(*) FROM ratings").fetchone()
        run_id, recorded = con.execute(
            "SELECT run_id, artifacts_dir FROM published_run JOIN model_runs USING (run_id)"
        ).fetchone()
    artifacts = args.artifacts or Path(recorded).parent
    walls, inside, idle, per_second, checked = [], [], [], [], 0
    with tempfile.TemporaryDirectory(prefix="bench-refresh-", dir=REPO / "artifacts") as work:
        work = Path(work)
        for repeat in range(args.repeats):
            db, data = work / "recs.db", work / f"data-{repeat}"
            for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                stale.unlink(missing_ok=True)
            copy_database(args.db, db)
            (data / "incoming").mkdir(parents=True)
            lines = new_ratings(db, args.ratings, args.users, args.seed + repeat)
            (data / "incoming" / "ratings-0001.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines))
            wall, result = timed(refresh_command(db, artifacts, data))
            if result["status"] != "refreshed":
                sys.exit(f"the refresh did not refresh: {result}")
            still = still_listed(db, lines)
            if still:
                sys.exit(f"{still} rated movies are still in their users' lists after the refresh")
            checked += len(lines)
            walls.append(wall)
            inside.append(result["seconds"])
            per_second.append(result["n_users"] / result["seconds"])
            idle.append(timed(refresh_command(db, artifacts, data))[0])
            print(
                f"repeat {repeat + 1}: {result['n_ratings']} ratings, {result['n_users']} users; command "
                f"{wall:.2f} s, refresh {result['seconds']:.2f} s; nothing new {idle[-1]:.2f} s",
                flush=True,
            )
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n`recjobs refresh` on {args.db} ({n_ratings:,} ratings, run {run_id}), {args.ratings} ratings from "
        f"{args.users} users, medians of {args.repeats}:\n"
    )
    print(f"Rated movies still in their user's list after the refresh: none of the {checked} checked.\n")
    print("| measure | median | min | max |\n|---|---|---|---|")
    for name, values, unit in (
        ("the whole command (process start to exit)", walls, "s"),
        ("the refresh itself (RefreshResult.seconds)", inside, "s"),
        ("users refolded per second (of the refresh itself)", per_second, "/s"),
        ("a refresh with nothing new (the whole command)", idle, "s"),
    ):
        print(f"| {name} | {statistics.median(values):.2f} {unit} | {min(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
