"""What each lever of the method is worth, on the validation items (leave-last-out: each user's
second-to-last positive; models fitted on the ratings before it). The test items are never
read. Mean over ALS seeds 42 and 43; 95% bootstrap interval over users. Prints Markdown.

    .venv/bin/python tests/benchmarks/levers.py --data-dir ../shared/data/ml-latest-small
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recjobs.evaluation.metrics import bootstrap_ci  # noqa: E402
from recjobs.jobs import tune  # noqa: E402
from recjobs.method import model  # noqa: E402
from recjobs.settings import Settings  # noqa: E402

OFF = {"recency_decay": 0.0, "blend_weight": 0.0, "sequence_weight": 0.0, "trend_weight": 0.0}
VARIANTS = [
    ("ALS alone, every rated movie filtered, whole history", OFF),
    ("+ recency weighting (`recency_decay` 10)", {**OFF, "recency_decay": 10.0}),
    ("+ cosine item-item blend (`blend_weight` 0.5)", {"sequence_weight": 0.0, "trend_weight": 0.0}),
    ("+ sequence blend (`sequence_weight` 1)", {"trend_weight": 0.0}),
    ("+ trending part (`trend_weight`, `trend_days` as set)", {}),
    ("the above, lower ratings as weak signals (`negative_weight` 0.3)", {"negative_weight": 0.3}),
    ("reference recipe (64 factors, regularization 0.02, confidence 1 + 20)", model.REFERENCE_RECIPE),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--trend-weight", type=float, default=None, help="[default: the setting's default]")
    parser.add_argument("--trend-days", type=float, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(data_dir=args.data_dir).replace(trend_weight=args.trend_weight, trend_days=args.trend_days)
    task = tune.validation_task(settings, seeds=(42, 43))
    print(
        f"{len(task.rows)} validation users, seeds 42 and 43, trend_weight {settings.trend_weight}, "
        f"trend_days {settings.trend_days}\n"
    )
    print("| method | Recall@10 [95% CI] | NDCG@10 |\n|---|---|---|")
    for label, changes in VARIANTS:
        metrics = task.score(settings.replace(**changes))
        recall, ndcg = metrics["recall_at_10"], metrics["ndcg_at_10"]
        low, high = bootstrap_ci(recall)
        print(f"| {label} | {recall.mean():.4f} [{low:.4f}, {high:.4f}] | {ndcg.mean():.4f} |", flush=True)


if __name__ == "__main__":
    main()
