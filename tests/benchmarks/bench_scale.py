"""Benchmark of a whole night at scale: every step of `recjobs run` on ml-latest-small and on
synthetic MovieLens-layout sets (`recjobs synth`) of 1M, 5M and 25M ratings.

    python tests/benchmarks/bench_scale.py --sizes small,1M,5M      # or: make bench-scale
    python tests/benchmarks/bench_scale.py --sizes 25M --work /big/disk

Each size runs three nights on one database: the first on the set without its newest 0.5% of
ratings (nothing published before: what a first night costs), the second on the whole set with
the first night's run published (what a usual night costs), and a third, forced full night on
the same data (what a full night costs; the usual night's Recall@10 is set against its interval).
With --baseline (a git worktree of the previous code) the first two run with that code too,
first, on a database of their own: each step's ratio to it is measured in the same run.
Each step runs as its own process
(the step commands), so its wall time and its peak RSS (os.wait4) are its own; the score shards
run side by side, as the DAG's mapped tasks do (their peaks summed).

Next to them, in the same run, the reference approach, each timed against the same work done
the product's way, in this process:
- scoring users: the reference plan's per-user Python loop over implicit's `model.recommend`
  (ALS alone), and a per-user loop over the product's own blend (`Fitted.recommend`, one user
  per call), against `Fitted.recommend` batched, on the same sample of users;
- writing rows: a per-row INSERT loop against `db.insert_many` (executemany), the same rows
  into the same `recommendations` table of a scratch database, one transaction each;
- reading ratings.csv: `pd.read_csv` with default settings against the load step (which also
  checks, dedupes and saves everything).
From those rates, the seconds the reference approach would need for the night's evaluate and
precompute work (every test user through three models; every user scored, every row written
one by one) are derived and set against the steps' measured seconds.
Writes a JSON and a Markdown table (--out, default artifacts/bench-scale/).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import threading
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
STEPS = ("load", "split", "train", "evaluate", "score-shards", "precompute", "evaluate-cold-start")
SHARDS = 2  # one per core, as the DAG maps them
REFERENCE_USERS = 2_000  # the per-user loops' sample
BATCHED_USERS = 8_192  # the batched scorer's sample (it is far faster)
REFERENCE_ROWS = 200_000
QUALITY_SIZES = ("small", "1M", "5M")  # evaluated twice more (item_item_min_weight 0 and default); 25M: too slow
EVALUATED_MODELS = 3  # evaluate ranks every sampled test user with the model, the reference recipe and popularity
NEW_RATINGS_SHARE = 0.005  # the second night's new ratings: the newest 0.5% (a day or so of a busy service)


def timed(command: list[str], env: dict, cwd: Path | None = None) -> dict:
    """Wall seconds and peak RSS of one process (its own, from os.wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, cwd=cwd)
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
    """The reference approach and the product's own way of doing the same work, side by side in
    this process, on run_id's published (FULL) model."""
    import numpy as np
    import pandas as pd

    from recjobs.method import model
    from recjobs.settings import Settings
    from recjobs.storage import artifacts as run_files
    from recjobs.storage import db as recs_db

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
    rng = np.random.default_rng(0)
    n_users = len(factors.user_ids)
    sample = np.sort(rng.choice(n_users, min(REFERENCE_USERS, n_users), False))
    batched_sample = np.sort(rng.choice(n_users, min(BATCHED_USERS, n_users), False))

    def users_per_second(score_users, users) -> float:
        started = time.perf_counter()
        score_users(users)
        return len(users) / (time.perf_counter() - started)

    user_items = everything.seen

    def reference_plan_loop(users):  # one call per user, ALS only
        for user in users:
            fitted.als.recommend(int(user), user_items[int(user)], N=settings.k, filter_already_liked_items=True)

    def blend_loop(users):  # the product's blend, one user per call
        for user in users:
            fitted.recommend(np.array([user]), everything, settings.k, settings)

    loop_rate = users_per_second(reference_plan_loop, sample)
    blend_loop_rate = users_per_second(blend_loop, sample[: REFERENCE_USERS // 4])
    batched_rate = users_per_second(
        lambda users: fitted.recommend(users, everything, settings.k, settings), batched_sample
    )

    users = range(REFERENCE_ROWS // 50)
    rows = [("bench", user, rank, user * 50 + rank, 1.0 / rank) for user in users for rank in range(1, 51)]

    def per_row(scratch: Path) -> None:  # the reference plan: one execute per row, one transaction
        statement = recs_db.sql("publish.insert_recommendation")
        raw = sqlite3.connect(scratch, isolation_level=None)
        raw.execute("BEGIN")
        for row in rows:
            raw.execute(statement, row)
        raw.execute("COMMIT")
        raw.close()

    def insert_many(scratch: Path) -> None:  # the product's way
        with recs_db.transaction(scratch) as conn:
            recs_db.insert_many(conn, "publish.insert_recommendation", rows)

    rates = {}
    for name, insert in (("per_row", per_row), ("insert_many", insert_many)):
        scratch = Path(db).with_name(f"reference-{name}.db")  # each into an empty table of its own
        with recs_db.transaction(scratch) as conn:
            conn.exec_driver_sql("INSERT INTO model_runs (run_id, started_at, params_json) VALUES ('bench', '', '{}')")
        started = time.perf_counter()
        insert(scratch)
        rates[name] = len(rows) / (time.perf_counter() - started)
        recs_db.engine_for(scratch).dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    insert_rows_per_second, insert_many_rows_per_second = rates["per_row"], rates["insert_many"]
    return {
        "read_csv_seconds": round(read_csv_seconds, 2),
        "loop_users_per_second": round(loop_rate, 1),
        "blend_loop_users_per_second": round(blend_loop_rate, 1),
        "batched_users_per_second": round(batched_rate, 1),
        "insert_rows_per_second": round(insert_rows_per_second),
        "insert_many_rows_per_second": round(insert_many_rows_per_second),
    }


def quality_before_and_after(db: Path, artifacts: Path, data: Path, run_id: str, env: dict) -> dict:
    """The night's evaluate again with every rating in the item-item scores (item_item_min_weight
    0, as before it existed), then with the default: Recall@10 and NDCG@10 with their intervals."""
    env = {**env, "RECJOBS_DATA_DIR": str(data), "RECJOBS_DB": str(db), "RECJOBS_ARTIFACTS": str(artifacts)}
    out = {}
    for label, floor in (("every rating", "0"), ("default", "")):
        command = [sys.executable, "-m", "recjobs", "-q", "evaluate", "--run-id", run_id, "--json"]
        done = subprocess.run(
            command, env={**env, "RECJOBS_ITEM_ITEM_MIN_WEIGHT": floor}, capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout)
        out[label] = {
            name: result[name] for name in ("recall_at_10", "recall_at_10_ci", "ndcg_at_10", "ndcg_at_10_ci", "seconds")
        }
    return out


def side_by_side(run_one, n: int) -> tuple[float, list]:
    """run_one(i) for i in range(n), all at once in threads: (wall seconds, their results)."""
    started = time.perf_counter()
    outcomes: list = [None] * n

    def one(i: int) -> None:
        outcomes[i] = run_one(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, outcomes


def score_shards_side_by_side(command: list[str], env: dict, cwd: Path | None = None) -> dict:
    """Every shard's `recjobs score-shard` at once: wall seconds, and the shards' peaks summed."""
    seconds, outcomes = side_by_side(lambda shard: timed([*command, "--shard", str(shard)], env, cwd), SHARDS)
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(sum(figures["peak_rss_mb"] for figures in outcomes), 1),
    }


def steps_of_a_night(
    data: Path, db: Path, artifacts: Path, run_id: str, size: str, label: str, env: dict, code: Path | None = None
) -> dict:
    """Each step of one night as its own process; `code`: another checkout of the project (the
    previous code, from a git worktree) whose recjobs runs instead, with the same Python."""
    env = {**env, "RECJOBS_DATA_DIR": str(data), "RECJOBS_DB": str(db), "RECJOBS_ARTIFACTS": str(artifacts)}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    env["RECJOBS_SCORE_SHARDS"] = str(SHARDS)
    steps = {}
    for step in STEPS:
        command = [sys.executable, "-m", "recjobs", "-q"]
        if step == "score-shards":  # side by side, as a LocalExecutor runs the mapped tasks
            steps[step] = score_shards_side_by_side([*command, "score-shard", "--run-id", run_id], env, code)
        else:
            steps[step] = timed([*command, step, "--run-id", run_id], env, code)
        print(
            f"{size} {label} {step}: {steps[step]['seconds']:.1f} s, peak RSS {steps[step]['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return steps


def night(size: str, work: Path, env: dict, baseline: Path | None = None) -> dict:
    """Two nights on one database: the first on the set without its newest ratings (nothing
    published before), the second on the whole set with the first night's run published. With
    `baseline` (a checkout of the previous code), the same two nights with that code first, on
    a database of their own, so each step can be set against it measured in the same run."""
    data, synth_timing = data_for(size, work, env)
    before = day_before(data, work, size)
    previous = None
    if baseline is not None:
        where = work / f"{size}-previous-code"
        if where.exists():
            subprocess.run(["rm", "-rf", str(where)], check=True)
        db, artifacts = where / "recs.db", where / "artifacts"
        previous = {
            "steps": steps_of_a_night(
                before, db, artifacts, "night1", size, "first night, previous code", env, baseline
            ),
            "second_night_steps": steps_of_a_night(
                data, db, artifacts, "night2", size, "second night, previous code", env, baseline
            ),
        }
    where = work / size
    if where.exists():
        subprocess.run(["rm", "-rf", str(where)], check=True)
    db, artifacts = where / "recs.db", where / "artifacts"
    steps = steps_of_a_night(before, db, artifacts, "night1", size, "first night", env)
    second = steps_of_a_night(data, db, artifacts, "night2", size, "second night", env)
    # a full night on the same data as the usual one: its cost, and the usual night's quality against it
    full_env = {**env, "RECJOBS_FULL_EVALUATION": "true"}
    third = steps_of_a_night(data, db, artifacts, "night3", size, "full night, same data", full_env)
    with sqlite3.connect(db) as conn:
        n_ratings = conn.execute("SELECT n_ratings FROM model_runs WHERE run_id = 'night2'").fetchone()[0]
        n_users = conn.execute("SELECT count(DISTINCT user_id) FROM recommendations WHERE run_id = 'night2'")
        n_users = n_users.fetchone()[0]
        n_rows = conn.execute(
            "SELECT (SELECT count(*) FROM recommendations WHERE run_id = 'night2')"
            " + (SELECT count(*) FROM similar_movies WHERE run_id = 'night2')"
        ).fetchone()[0]
        published = conn.execute("SELECT run_id FROM published_run").fetchone()[0]
        # every test user of the night, evaluated (sampled) or not
        n_test_users = conn.execute("SELECT n_test_users FROM model_runs WHERE run_id = 'night2'").fetchone()[0]
    ref = reference(data, db, artifacts, "night2")
    quality = quality_before_and_after(db, artifacts, data, "night2", env) if size in QUALITY_SIZES else None
    # the reference approach's seconds for the same work, from its rates measured above
    reference_evaluate = n_test_users * EVALUATED_MODELS / ref["loop_users_per_second"]
    reference_precompute = n_users / ref["loop_users_per_second"] + n_rows / ref["insert_rows_per_second"]
    ours_precompute = second["score-shards"]["seconds"] + second["precompute"]["seconds"]
    return {
        "size": size,
        "previous_code": previous,
        "night_metrics": {night: night_metrics(db, night) for night in ("night1", "night2", "night3")},
        "n_ratings": n_ratings,
        "n_new_ratings_second_night": n_ratings - int(round(n_ratings * (1 - NEW_RATINGS_SHARE))),
        "n_users": n_users,
        "n_test_users": n_test_users,
        "rows_published": n_rows,
        "published_after_second_night": published,
        "synth": synth_timing,
        "steps": steps,
        "second_night_steps": second,
        "full_night_steps": third,
        "total_seconds": round(sum(s["seconds"] for s in steps.values()), 1),
        "second_night_total_seconds": round(sum(s["seconds"] for s in second.values()), 1),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in [*steps.values(), *second.values()]),
        "reference": ref,
        "quality": quality,
        "reference_seconds": {"evaluate": round(reference_evaluate, 1), "precompute": round(reference_precompute, 1)},
        "ratios": {
            "batched_over_reference_plan_loop_users_per_second": round(
                ref["batched_users_per_second"] / ref["loop_users_per_second"], 2
            ),
            "batched_over_blend_loop_users_per_second": round(
                ref["batched_users_per_second"] / ref["blend_loop_users_per_second"], 2
            ),
            "insert_many_over_per_row_insert_rows_per_second": round(
                ref["insert_many_rows_per_second"] / ref["insert_rows_per_second"], 2
            ),
            "read_csv_default_over_load_step": round(ref["read_csv_seconds"] / second["load"]["seconds"], 2),
            "reference_evaluate_over_evaluate_step": round(reference_evaluate / second["evaluate"]["seconds"], 2),
            "reference_precompute_over_score_shards_and_precompute": round(reference_precompute / ours_precompute, 2),
        },
    }


def night_metrics(db: Path, run_id: str) -> dict:
    """The night's own evaluation as it recorded it: full or usual, Recall@10 with its interval."""
    with sqlite3.connect(db) as conn:
        rows = dict(
            conn.execute("SELECT metric, value FROM run_metrics WHERE run_id = ? AND segment = 'all'", (run_id,))
        )
    names = ("full_evaluation", "recall_at_10", "recall_at_10_ci_low", "recall_at_10_ci_high", "ndcg_at_10", "n_users")
    return {name: rows.get(name) for name in names}


def markdown(results: list[dict]) -> str:
    lines = [
        "| data | ratings | " + " | ".join(STEPS) + " | whole night | peak RSS |",
        "|---|---|" + "---|" * len(STEPS) + "---|---|",
    ]
    for r in results:
        nights = [
            ("first night", r["steps"], "steps"),
            ("second night (usual)", r["second_night_steps"], "second_night_steps"),
            ("full night, same data", r["full_night_steps"], "second_night_steps"),
        ]
        for label, steps, key in nights:
            cells = [f"{steps[s]['seconds']:.1f} s / {steps[s]['peak_rss_mb'] / 1024:.2f} GB" for s in STEPS]
            total = sum(steps[s]["seconds"] for s in STEPS)
            peak = max(steps[s]["peak_rss_mb"] for s in STEPS)
            lines.append(
                f"| {r['size']}, {label} | {r['n_ratings']:,} | " + " | ".join(cells) + f" | {total:.0f} s | "
                f"{peak / 1024:.2f} GB |"
            )
            if r.get("previous_code"):
                old = r["previous_code"][key]
                old_total = sum(old[s]["seconds"] for s in STEPS)
                cells = [f"{old[s]['seconds']:.1f} s ({steps[s]['seconds'] / old[s]['seconds']:.2f}x)" for s in STEPS]
                old_peak = max(old[s]["peak_rss_mb"] for s in STEPS)
                lines.append(
                    f"| {r['size']}, {label}, previous code (ratio: this code / it) | | "
                    + " | ".join(cells)
                    + f" | {old_total:.0f} s ({total / old_total:.2f}x) | {old_peak / 1024:.2f} GB |"
                )
    lines += [
        "",
        "Against the reference approach, measured in the same run (second night's model; users/s and rows/s "
        "side by side in one process; reference seconds derived from those rates):",
        "",
        "| data | batched users/s | per-user loop, ALS only | ratio | per-user loop, whole blend | ratio | "
        "executemany rows/s | per-row insert rows/s | ratio | evaluate: reference s (derived) / step s | "
        "score shards + precompute: reference s (derived) / steps s | pd.read_csv default s / load step s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref, ratio, second = r["reference"], r["ratios"], r["second_night_steps"]
        ours_precompute = second["score-shards"]["seconds"] + second["precompute"]["seconds"]
        lines.append(
            f"| {r['size']} | {ref['batched_users_per_second']:,.0f} | {ref['loop_users_per_second']:,.0f} | "
            f"{ratio['batched_over_reference_plan_loop_users_per_second']:.1f}x | "
            f"{ref['blend_loop_users_per_second']:,.0f} | {ratio['batched_over_blend_loop_users_per_second']:.1f}x | "
            f"{ref['insert_many_rows_per_second']:,} | {ref['insert_rows_per_second']:,} | "
            f"{ratio['insert_many_over_per_row_insert_rows_per_second']:.1f}x | "
            f"{r['reference_seconds']['evaluate']:,.0f} / {second['evaluate']['seconds']:.0f} = "
            f"{ratio['reference_evaluate_over_evaluate_step']:.1f}x | "
            f"{r['reference_seconds']['precompute']:,.0f} / {ours_precompute:.0f} = "
            f"{ratio['reference_precompute_over_score_shards_and_precompute']:.1f}x | "
            f"{ref['read_csv_seconds']:.1f} / {second['load']['seconds']:.1f} = "
            f"{ratio['read_csv_default_over_load_step']:.2f}x |"
        )
    lines += [
        "",
        "Quality of the second night's evaluation model, scored with every rating in the item-item parts "
        "(`item_item_min_weight` 0) and with the default:",
        "",
        "| data | Recall@10, every rating | Recall@10, default | NDCG@10, every rating | NDCG@10, default |",
        "|---|---|---|---|---|",
    ]
    for r in (r for r in results if r["quality"]):
        q = r["quality"]
        cells = [
            f"{q[label][metric]:.4f} ({q[label][metric + '_ci'][0]:.4f}-{q[label][metric + '_ci'][1]:.4f})"
            for metric in ("recall_at_10", "ndcg_at_10")
            for label in ("every rating", "default")
        ]
        lines.append(f"| {r['size']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,1M,5M", help="comma-separated: small, 1M, 5M, 25M")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "bench-scale", help="data and runs go here")
    parser.add_argument("--out", type=Path, default=None, help="folder for bench-scale.json and .md [default: --work]")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="a checkout of the previous code (git worktree) to run side by side"
    )
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s != "small" and s not in SIZES]
    if unknown:
        sys.exit(f"--sizes: unknown {', '.join(unknown)}; expected small, {', '.join(SIZES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RECJOBS_JOB_NICE": "0"}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline is not None and not (baseline / "recjobs" / "__init__.py").is_file():
        sys.exit(f"--baseline {baseline}: no recjobs package there; expected a checkout of the project")
    results = [night(size, args.work, env, baseline) for size in sizes]
    out = args.out or args.work
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-scale.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / "bench-scale.md").write_text(table + "\n")
    print(table)
    print("\nEach night's own evaluation (Recall@10 with its 95% interval):")
    for r in results:
        for night_id, m in r["night_metrics"].items():
            kind = "full" if m["full_evaluation"] else "usual" if m["full_evaluation"] is not None else "?"
            print(
                f"{r['size']} {night_id} ({kind} night): Recall@10 {m['recall_at_10']:.4f} "
                f"[{m['recall_at_10_ci_low']:.4f}, {m['recall_at_10_ci_high']:.4f}], {m['n_users']:.0f} users"
            )


if __name__ == "__main__":
    main()
