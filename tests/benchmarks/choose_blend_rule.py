"""Choose the blend choice's rule (window, windows, minimum user-windows) on EARLIER nights only.

For each rule, replays `recjobs backtest` over the third quarter of the timeline (period
0.5-0.75 of the ratings made; the reported backtests use 0.75-1.0) on ml-latest-small and on a
time-dynamic synthetic set made with another seed than the reported one, each night choosing its
blend from its own past. Prints a Markdown table: pooled Recall@10 and NDCG@10 of the method with
the choice and with the configured weights, the share of nights that chose (the rest fell back)
and the mean chosen trend weight.

    .venv/bin/python tests/benchmarks/choose_blend_rule.py --data-dir data_small
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recjobs.jobs.backtest import backtest  # noqa: E402
from recjobs.jobs.synth import synth  # noqa: E402
from recjobs.settings import Settings  # noqa: E402

RULES = (  # (choice_window_days, choice_windows, choice_min_user_windows); the default first
    (14.0, 4, 100),
    (14.0, 2, 100),
    (7.0, 6, 100),
    (30.0, 2, 100),
    (14.0, 4, 25),
    (14.0, 4, 50),
    (14.0, 4, 200),
)
SYNTHETIC = dict(users=3_000, movies=2_000, ratings=200_000, seed=7, hits=0.1, days=1_095)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="ml-latest-small")
    parser.add_argument("--nights", type=int, default=24)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        "| data | window days | windows | min user-windows | Recall@10 | NDCG@10 | configured Recall@10 | "
        "nights chosen | mean trend weight |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        synthetic = Path(scratch) / "synthetic"
        synth(out_dir=synthetic, **SYNTHETIC)
        for name, data_dir, window in (("ml-latest-small", args.data_dir, 30.0), ("synthetic", synthetic, 14.0)):
            for days, windows, minimum in RULES:
                settings = Settings(
                    data_dir=data_dir,
                    artifacts=Path(scratch),
                    choice_window_days=days,
                    choice_windows=windows,
                    choice_min_user_windows=minimum,
                )
                result = backtest(
                    settings,
                    Path(scratch) / f"{name}-{days}-{windows}-{minimum}",
                    nights=args.nights,
                    window_days=window,
                    period=(0.5, 0.75),
                    peers_too=False,
                )
                chosen = [c for c in result.choices if c[-1] == "chosen"]
                mean_weight = sum(c[1] for c in result.choices) / len(result.choices)
                print(
                    f"| {name} | {days:g} | {windows} | {minimum} | {result.recall_at_10['model']:.4f} | "
                    f"{result.ndcg_at_10['model']:.4f} | {result.recall_at_10['configured']:.4f} | "
                    f"{len(chosen)}/{len(result.choices)} | {mean_weight:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
