"""Benchmark of the two engines side by side: a night's steps with engine=implicit and with
engine=spark (Spark in local mode on this machine), on ml-latest-small and synthetic
MovieLens-layout sets (`recjobs synth`, the sizes of bench_scale.py), in one run.

    python tests/benchmarks/bench_engines.py --sizes small,1M     # or: make bench-engines

Each step runs as its own process (the step commands: load, split, train, evaluate, then the
score shards and precompute), so its wall time is its own; its peak memory is the largest sum
of the RSS of the process and its children (Spark's JVM among them), sampled every 0.1 s.
Quality is the evaluate step's Recall@10 and NDCG@10 with their 95% bootstrap intervals, under
the same protocol for both engines. evaluate-cold-start is left out: it fits neither engine's
model. Writes a JSON and a Markdown table (--out, default artifacts/bench-engines/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import SIZES, side_by_side  # noqa: E402

ENGINES = ("implicit", "spark")
STEPS = ("load", "split", "train", "evaluate", "score-shards", "precompute")


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def timed(command: list[str], env: dict) -> tuple[dict, str]:
    """Wall seconds and the peak RSS of the process tree; (figures, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak, done = [0], threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(root))
            except psutil.NoSuchProcess:
                return
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak[0] / 2**20, 1)}, stdout


def data_for(size: str, work: Path) -> Path:
    if size == "small":
        return REPO / "data_small"
    folder = work / f"data-{size}"
    if not (folder / "ratings.csv").is_file():
        users, movies, ratings = SIZES[size]
        recjobs = str(Path(sys.executable).parent / "recjobs")
        subprocess.run(
            [recjobs, "synth", "--users", str(users), "--movies", str(movies), "--ratings", str(ratings)]
            + ["--out", str(folder)],
            check=True,
        )
    return folder


def score_shards_side_by_side(recjobs: str, run_id: str, shards: int, env: dict) -> dict:
    """Every shard's `recjobs score-shard` at once: wall seconds, and the shards' peaks summed."""
    command = [recjobs, "score-shard", "--run-id", run_id, "--json"]
    seconds, outcomes = side_by_side(lambda shard: timed([*command, "--shard", str(shard)], env), shards)
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(sum(figures["peak_rss_mb"] for figures, _ in outcomes), 1),
    }


def night(size: str, engine: str, work: Path, shards: int) -> dict:
    data = data_for(size, work)
    root = work / f"{size}-{engine}"
    shutil.rmtree(root, ignore_errors=True)  # a first night: nothing published, no warm start
    env = {
        **os.environ,
        "RECJOBS_DATA_DIR": str(data),
        "RECJOBS_DB": str(root / "recs.db"),
        "RECJOBS_ARTIFACTS": str(root / "artifacts"),
        "RECJOBS_ENGINE": engine,
        "RECJOBS_SCORE_SHARDS": str(shards),
        "RECJOBS_SPARK_CHECKPOINT_DIR": str(root / "checkpoints"),
        "RECJOBS_JOB_NICE": "0",
    }
    recjobs = str(Path(sys.executable).parent / "recjobs")
    run_id = f"{size}-{engine}"
    steps, results = {}, {}
    for step in STEPS:
        if step == "score-shards":  # side by side, as a LocalExecutor runs the mapped tasks
            steps[step] = score_shards_side_by_side(recjobs, run_id, shards, env)
            continue
        command = [recjobs, step, "--run-id", run_id, "--json"]
        steps[step], stdout = timed(command, env)
        results[step] = json.loads(stdout)
        print(f"{size} {engine} {step}: {steps[step]}", flush=True)
    assert results["precompute"]["shards_from_files"] == shards, results["precompute"]
    metrics = results["evaluate"]
    return {
        "size": size,
        "engine": engine,
        "ratings": results["load"]["n_ratings"],
        "users": results["train"]["n_users"],
        "movies": results["train"]["n_items"],
        "steps": steps,
        "seconds": round(sum(s["seconds"] for s in steps.values()), 2),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()),
        "published": results["precompute"]["status"],
        "db_mb": round((root / "recs.db").stat().st_size / 2**20, 1),
        "recommendation_rows": results["precompute"]["n_recommendations"],
        "recall_at_10": metrics["recall_at_10"],
        "recall_at_10_ci": metrics["recall_at_10_ci"],
        "ndcg_at_10": metrics["ndcg_at_10"],
        "ndcg_at_10_ci": metrics["ndcg_at_10_ci"],
        "popularity_recall_at_10": metrics["popularity_recall_at_10"],
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| size | engine | "
        + " | ".join(STEPS)
        + " | night | peak RSS | database | Recall@10 (95% CI) | NDCG@10 (95% CI) |",
        "|---|---|" + "---|" * len(STEPS) + "---|---|---|---|---|",
    ]
    for r in results:
        cells = [f"{r['steps'][s]['seconds']:.1f} s" for s in STEPS]
        lines.append(
            f"| {r['size']} ({r['ratings']:,} ratings) | {r['engine']} | "
            + " | ".join(cells)
            + f" | {r['seconds']:.0f} s | {r['peak_rss_mb'] / 1024:.2f} GB | {r['db_mb']:.0f} MB | "
            f"{r['recall_at_10']:.4f} ({r['recall_at_10_ci'][0]:.4f}-{r['recall_at_10_ci'][1]:.4f}) | "
            f"{r['ndcg_at_10']:.4f} ({r['ndcg_at_10_ci'][0]:.4f}-{r['ndcg_at_10_ci'][1]:.4f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="small,1M",
        help="comma-separated: small, 1M, 5M, 25M; SIZE:ENGINE runs that size with one engine only (25M:implicit)",
    )
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--shards", type=int, default=2, help="score shards, run side by side [default: 2]")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "bench-engines")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for bench-engines.json and .md [default: --work]"
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or args.work
    out.mkdir(parents=True, exist_ok=True)
    results = []
    nights = []  # (size, engine), checked before anything runs
    for token in args.sizes.split(","):
        size, _, only = token.partition(":")
        for engine in [only] if only else args.engines.split(","):
            if engine not in ENGINES or size not in ("small", *SIZES):
                expected = f"sizes small, {', '.join(SIZES)}; engines {', '.join(ENGINES)}"
                sys.exit(f"--sizes: {token!r} is not SIZE or SIZE:ENGINE ({expected})")
            nights.append((size, engine))
    for size, engine in nights:
        results.append(night(size, engine, args.work, args.shards))
        (out / "bench-engines.json").write_text(json.dumps(results, indent=2))
        (out / "bench-engines.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
