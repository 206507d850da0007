"""Benchmark of a whole night at scale: every step of `recjobs run` on ml-latest-small and on
synthetic MovieLens-layout sets (`recjobs synth`) of 1M, 5M and 25M ratings.

    python tests/benchmarks/bench_scale.py --sizes small,1M,5M      # or: make bench-scale
    python tests/benchmarks/bench_scale.py --sizes 25M --work /big/disk

Each size runs two nights on one database: the first on the set without its newest 0.5% of
ratings (nothing published before: what a first night costs), the second on the whole set with
the first night's run published (what a usual night costs). Each step runs as its own process
(the step commands), so its wall time and its peak RSS (os.wait4) are its own. Next to them, in
the same run, the reference approach on a sample: the reference plan's per-user Python loop
over implicit's `model.recommend` (users/s, against the users the precompute step scored per
second, writes included), `pd.read_csv` with default settings (against the load step), and a
per-row INSERT loop (rows/s, against the precompute step's rows written per second). Writes a
JSON and a Markdown table (--out, default artifacts/bench-scale/).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: the reference loop runs here

REPO = Path(__file__).resolve().parents[2]
# name -> (users, movies, ratings): 25M is MovieLens 25M's shape
SIZES = {
    "1M": (20_000, 10_000, 1_000_000),
    "5M": (60_000, 30_000, 5_000_000),
    "25M": (162_000, 59_000, 24_300_000),
}
STEPS = ("load", "split", "train", "evaluate", "precompute", "evaluate-cold-start")
REFERENCE_USERS = 2_000
REFERENCE_ROWS = 200_000
NEW_RATINGS_SHARE = 0.005  # the second night's new ratings: the newest 0.5% (a day or so of a busy service)


def timed(command: list[str], env: dict) -> dict:
    """Wall seconds and peak RSS of one process (its own, from os.wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def data_for(size: str, work: Path, env: dict) -> tuple[Path, dict | None]:
    if size == "small":
        return REPO / "data_small", None
    folder = work / f"data-{size}"
    if (folder / "ratings.csv").is_file():
        return folder, None
    users, movies, ratings = SIZES[size]
    command = [sys.executable, "-m", "recjobs", "-q", "synth", "--users", str(users), "--movies", str(movies)]
    command += ["--ratings", str(ratings), "--seed", "42", "--out", str(folder)]
    return folder, timed(command, env)


def day_before(data: Path, work: Path, size: str) -> Path:
    """The set as the night before saw it: without its newest NEW_RATINGS_SHARE of ratings (by
    time); the other files are the same. Made once under --work."""
    import numpy as np
    import pandas as pd

    folder = work / f"data-{size}-day-before"
    if (folder / "ratings.csv").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_csv(
        data / "ratings.csv", dtype={"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"}
    )
    keep = int(round(len(ratings) * (1 - NEW_RATINGS_SHARE)))
    ratings.iloc[np.sort(np.argsort(ratings["timestamp"].to_numpy(), kind="stable")[:keep])].to_csv(
        folder / "ratings.csv", index=False
    )
    for name in ("movies.csv", "links.csv", "tags.csv"):
        if (data / name).is_file():
            (folder / name).write_bytes((data / name).read_bytes())
    return folder


def reference(data: Path, db: Path, artifacts: Path, run_id: str) -> dict:
    """The reference approach on a sample, in this process."""
    import numpy as np
    import pandas as pd

    from recjobs import artifacts as run_files
    from recjobs import model
    from recjobs.settings import Settings

    started = time.perf_counter()
    pd.read_csv(data / "ratings.csv")
    read_csv_seconds = time.perf_counter() - started

    settings = Settings(db=db, artifacts=artifacts)
    directory = run_files.run_dir(artifacts, run_id)
    fitted, factors = model.Fitted.read(directory, run_files.FULL, settings)
    ratings = run_files.read_ratings(directory)
    everything = model.interactions(
        ratings, np.ones(len(ratings["rating"]), bool), factors.user_ids, factors.movie_ids, settings
    )
    user_items = everything.positives.tocsr()
    sample = np.random.default_rng(0).choice(len(factors.user_ids), min(REFERENCE_USERS, len(factors.user_ids)), False)
    started = time.perf_counter()
    for user in sample:  # the reference plan: one call per user, ALS only
        fitted.als.recommend(int(user), user_items[int(user)], N=settings.k, filter_already_liked_items=True)
    loop_users_per_second = len(sample) / (time.perf_counter() - started)

    scratch = Path(db).with_name("reference-inserts.db")
    conn = sqlite3.connect(scratch)
    conn.execute("CREATE TABLE recs (run_id TEXT, user_id INTEGER, rank INTEGER, movie_id INTEGER, score REAL)")
    started = time.perf_counter()
    for i in range(REFERENCE_ROWS):  # the reference plan: one execute per row, one transaction
        conn.execute("INSERT INTO recs VALUES (?, ?, ?, ?, ?)", ("r", i // 50, i % 50, i, 0.5))
    conn.commit()
    insert_rows_per_second = REFERENCE_ROWS / (time.perf_counter() - started)
    conn.close()
    scratch.unlink()
    return {
        "read_csv_seconds": round(read_csv_seconds, 2),
        "loop_users_per_second": round(loop_users_per_second, 1),
        "insert_rows_per_second": round(insert_rows_per_second),
    }


def steps_of_a_night(data: Path, db: Path, artifacts: Path, run_id: str, size: str, label: str, env: dict) -> dict:
    common = ["--data-dir", str(data), "--db", str(db), "--artifacts", str(artifacts), "--run-id", run_id]
    steps = {}
    for step in STEPS:
        steps[step] = timed([sys.executable, "-m", "recjobs", "-q", step, *common], env)
        print(
            f"{size} {label} {step}: {steps[step]['seconds']:.1f} s, peak RSS {steps[step]['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return steps


def night(size: str, work: Path, env: dict) -> dict:
    """Two nights on one database: the first on the set without its newest ratings (nothing
    published before), the second on the whole set with the first night's run published."""
    data, synth_timing = data_for(size, work, env)
    before = day_before(data, work, size)
    where = work / size
    if where.exists():
        subprocess.run(["rm", "-rf", str(where)], check=True)
    db, artifacts = where / "recs.db", where / "artifacts"
    steps = steps_of_a_night(before, db, artifacts, "night1", size, "first night", env)
    second = steps_of_a_night(data, db, artifacts, "night2", size, "second night", env)
    with sqlite3.connect(db) as conn:
        n_ratings = conn.execute("SELECT n_ratings FROM model_runs WHERE run_id = 'night2'").fetchone()[0]
        n_users = conn.execute("SELECT count(DISTINCT user_id) FROM recommendations WHERE run_id = 'night1'")
        n_users = n_users.fetchone()[0]
        n_rows = conn.execute(
            "SELECT (SELECT count(*) FROM recommendations WHERE run_id = 'night1')"
            " + (SELECT count(*) FROM similar_movies WHERE run_id = 'night1')"
        ).fetchone()[0]
        published = conn.execute("SELECT run_id FROM published_run").fetchone()[0]
    ref = reference(data, db, artifacts, "night1")
    users_per_second = n_users / steps["precompute"]["seconds"]
    rows_per_second = n_rows / steps["precompute"]["seconds"]
    return {
        "size": size,
        "n_ratings": n_ratings,
        "n_new_ratings_second_night": n_ratings - int(round(n_ratings * (1 - NEW_RATINGS_SHARE))),
        "n_users": n_users,
        "rows_published": n_rows,
        "published_after_second_night": published,
        "synth": synth_timing,
        "steps": steps,
        "second_night_steps": second,
        "total_seconds": round(sum(s["seconds"] for s in steps.values()), 1),
        "second_night_total_seconds": round(sum(s["seconds"] for s in second.values()), 1),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in [*steps.values(), *second.values()]),
        "users_per_second_precompute": round(users_per_second, 1),
        "rows_per_second_precompute": round(rows_per_second),
        "reference": ref,
        "ratios": {
            "precompute_users_per_second_over_per_user_loop": round(users_per_second / ref["loop_users_per_second"], 2),
            "precompute_rows_per_second_over_per_row_insert": round(rows_per_second / ref["insert_rows_per_second"], 2),
            "read_csv_default_over_load_step": round(ref["read_csv_seconds"] / steps["load"]["seconds"], 2),
        },
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| data | ratings | " + " | ".join(STEPS) + " | whole night | peak RSS |",
        "|---|---|" + "---|" * len(STEPS) + "---|---|",
    ]
    for r in results:
        for label, steps in (("first night", r["steps"]), ("second night", r["second_night_steps"])):
            cells = [f"{steps[s]['seconds']:.1f} s / {steps[s]['peak_rss_mb'] / 1024:.2f} GB" for s in STEPS]
            total = sum(steps[s]["seconds"] for s in STEPS)
            peak = max(steps[s]["peak_rss_mb"] for s in STEPS)
            lines.append(
                f"| {r['size']}, {label} | {r['n_ratings']:,} | " + " | ".join(cells) + f" | {total:.0f} s | "
                f"{peak / 1024:.2f} GB |"
            )
    lines += [
        "",
        "| data | users/s (precompute, writes included) | per-user loop users/s | ratio | rows/s written | "
        "per-row insert rows/s | ratio | pd.read_csv default s | load step s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref, ratio = r["reference"], r["ratios"]
        lines.append(
            f"| {r['size']} | {r['users_per_second_precompute']:,.0f} | {ref['loop_users_per_second']:,.0f} | "
            f"{ratio['precompute_users_per_second_over_per_user_loop']:.1f}x | {r['rows_per_second_precompute']:,} | "
            f"{ref['insert_rows_per_second']:,} | {ratio['precompute_rows_per_second_over_per_row_insert']:.1f}x | "
            f"{ref['read_csv_seconds']:.1f} | {r['steps']['load']['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,1M,5M", help="comma-separated: small, 1M, 5M, 25M")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "bench-scale", help="data and runs go here")
    parser.add_argument("--out", type=Path, default=None, help="folder for bench-scale.json and .md [default: --work]")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s != "small" and s not in SIZES]
    if unknown:
        sys.exit(f"--sizes: unknown {', '.join(unknown)}; expected small, {', '.join(SIZES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RECJOBS_JOB_NICE": "0"}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    results = [night(size, args.work, env) for size in sizes]
    out = args.out or args.work
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-scale.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / "bench-scale.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
