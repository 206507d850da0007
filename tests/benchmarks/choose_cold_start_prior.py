"""Choose the cold-start blend's popularity prior on held-out users APART from the reported ones.

evaluate_cold_start reports on a seeded 20% of the users with at least 15 positives (seed
random_seed). This script draws as many other users from the rest (seed (random_seed, 1)),
fits the run's method without them (default settings) and measures the served blend for each
prior and N liked movies: Recall@10 / NDCG@10 on their later positives. Prints a Markdown table
and the prior with the best mean Recall@10 over N (recjobs.jobs.cold_start_eval.choose_blend_prior).

    .venv/bin/python tests/benchmarks/choose_cold_start_prior.py --data-dir data_small [--json-out sweep.json]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from recjobs.jobs.cold_start_eval import BLEND_PRIORS, SEED_COUNTS, choose_blend_prior  # noqa: E402
from recjobs.settings import Settings  # noqa: E402
from recjobs.storage import artifacts  # noqa: E402
from recjobs.storage.movielens import read_catalog  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def read_ratings(settings: Settings) -> dict[str, np.ndarray]:
    """The ratings of a MovieLens-layout folder as `load` saves them (artifacts.read_ratings' arrays)."""
    frame = read_catalog(settings.data_dir, settings.positive_threshold).ratings
    return {name: frame[name].to_numpy().astype(kind) for name, kind in artifacts.RATING_ARRAYS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data_small")
    parser.add_argument("--priors", default=",".join(f"{p:g}" for p in BLEND_PRIORS))
    parser.add_argument("--json-out", type=Path, help="write the sweep and the choice here as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    settings = Settings(data_dir=args.data_dir)
    choice = choose_blend_prior(settings, read_ratings(settings), priors=[float(p) for p in args.priors.split(",")])
    seconds = time.perf_counter() - started

    print(
        f"{len(choice.tuning_users)} tuning users (seed {choice.tuning_seed}), apart from the "
        f"{len(choice.reported_users)} reported (seed {settings.random_seed}); {args.data_dir}, default settings\n"
    )
    print("| prior | " + " | ".join(f"N={n}" for n in SEED_COUNTS) + " | mean over N |")
    print("|---" * (len(SEED_COUNTS) + 2) + "|")
    for p in choice.recall_at_10:
        cells = [f"{choice.recall_at_10[p][n]:.3f} / {choice.ndcg_at_10[p][n]:.3f}" for n in SEED_COUNTS]
        mean = f"{choice.mean_recall_at_10[p]:.4f} / {choice.mean_ndcg_at_10[p]:.4f}"
        if p == choice.chosen_prior:
            mean = f"**{mean}**"
        print(f"| {p:g} | " + " | ".join(cells) + f" | {mean} |")
    print("\n(Recall@10 / NDCG@10 of the served blend, weight prior / (prior + N) on popularity)")
    print(f"chosen prior: {choice.chosen_prior:g}   ({seconds:.1f} s)")

    if args.json_out:
        artifacts.write_json(
            args.json_out,
            {
                "data_dir": str(args.data_dir),
                "chosen_prior": choice.chosen_prior,
                "tuning_seed": list(choice.tuning_seed),
                "n_tuning_users": len(choice.tuning_users),
                "n_reported_users": len(choice.reported_users),
                "recall_at_10": {f"{p:g}": {str(n): v for n, v in r.items()} for p, r in choice.recall_at_10.items()},
                "ndcg_at_10": {f"{p:g}": {str(n): v for n, v in r.items()} for p, r in choice.ndcg_at_10.items()},
                "mean_recall_at_10": {f"{p:g}": v for p, v in choice.mean_recall_at_10.items()},
                "mean_ndcg_at_10": {f"{p:g}": v for p, v in choice.mean_ndcg_at_10.items()},
                "seconds": round(seconds, 1),
            },
        )


if __name__ == "__main__":
    main()
