"""Choose the nightly method's trend settings on EARLIER backtest nights only.

Replays the nights of the third quarter of the ratings' timeline (period 0.5-0.75 of the
ratings made; the reported backtest uses the last quarter, 0.75-1.0, and is run once, after
this choice) for each trend_weight x trend_days, other settings at their defaults, seed 42.
Prints a Markdown table of pooled Recall@10 and NDCG@10.

    .venv/bin/python tests/benchmarks/choose_nightly_settings.py --data-dir ../shared/data/ml-latest-small
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recjobs.jobs.backtest import backtest  # noqa: E402
from recjobs.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--nights", type=int, default=48)
    parser.add_argument("--weights", default="0,0.5,1,2")
    parser.add_argument("--days", default="14,30")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for weight, days in itertools.product(map(float, args.weights.split(",")), map(float, args.days.split(","))):
            if weight == 0 and days != float(args.days.split(",")[0]):
                continue  # days mean nothing without the trend part
            settings = Settings(data_dir=args.data_dir, artifacts=Path(scratch), trend_weight=weight, trend_days=days)
            result = backtest(settings, Path(scratch) / f"w{weight}-d{days}", nights=args.nights, period=(0.5, 0.75))
            rows.append((weight, days, result))
            print(f"trend_weight {weight} trend_days {days}: Recall@10 {result.recall_at_10['model']:.4f}", flush=True)
    first = rows[0][2]
    print(f"\n{first.n_user_nights} user-nights, nights {first.cutoffs[0]} to {first.cutoffs[-1]} (period 0.5-0.75)\n")
    print("| trend_weight | trend_days | Recall@10 [95% CI] | NDCG@10 | recent popularity | popularity |")
    print("|---|---|---|---|---|---|")
    for weight, days, r in rows:
        low, high = r.recall_at_10_ci["model"]
        print(
            f"| {weight:g} | {days:g} | {r.recall_at_10['model']:.4f} [{low:.4f}, {high:.4f}] | "
            f"{r.ndcg_at_10['model']:.4f} | {r.recall_at_10['recent_popularity']:.4f} | "
            f"{r.recall_at_10['popularity']:.4f} |"
        )


if __name__ == "__main__":
    main()
