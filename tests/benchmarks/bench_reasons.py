"""What the reasons cost (recjobs.method.reasons): seconds to score users' lists and to find the
reason of each listed movie, on a published run's model, for a sample of its users.

    python tests/benchmarks/bench_reasons.py --db artifacts/recs.db [--users 2000] [--repeats 3]

Medians over the repeats, measured side by side in one process: the nightly scoring of the
sampled users (Fitted.recommend, k of the run) and list_reasons over the same lists.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main() -> None:
    from recjobs.method import reasons, shards
    from recjobs.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with sqlite3.connect(args.db) as con:
        run_id, recorded = con.execute(
            "SELECT run_id, artifacts_dir FROM published_run JOIN model_runs USING (run_id)"
        ).fetchone()
    settings = Settings(db=args.db, artifacts=Path(recorded).parent)
    scorer = shards.Scorer(settings, run_id)
    n = min(args.users, scorer.n_users)
    data = scorer.data(0, n)
    rows = np.arange(n)
    scoring, explaining = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        items, _ = scorer.fitted.recommend(rows, data, scorer.settings.k, scorer.settings)
        scored = time.perf_counter()
        because = reasons.list_reasons(scorer.fitted, data, scorer.settings, rows, items)
        scoring.append(scored - started)
        explaining.append(time.perf_counter() - scored)
    share = float((because[items >= 0] >= 0).mean())
    score_s, explain_s = statistics.median(scoring), statistics.median(explaining)
    print(f"run {run_id}: {scorer.n_users:,} users, {scorer.n_items:,} movies; the first {n}, k = {scorer.settings.k}")
    print(f"| measure | median of {args.repeats} |\n|---|---|")
    print(f"| scoring the lists | {score_s:.2f} s ({1000 * score_s / n:.2f} ms a user) |")
    print(f"| their reasons | {explain_s:.2f} s ({1000 * explain_s / n:.2f} ms a user) |")
    print(f"| reasons / scoring | {explain_s / score_s:.2f} |")
    print(f"| listed movies with a reason | {share:.4f} |")


if __name__ == "__main__":
    main()
