"""What the nightly content step costs (recjobs.method.content.score_thin_movies): seconds to build
the catalogue's content rows and to predict the thin movies' factors, on a run's one fit, beside
the seconds that run's train step took.

    python tests/benchmarks/bench_content.py --db artifacts/recs.db [--repeats 3]

Medians over the repeats, in one process: content_features (genres, year, tags of every movie)
and with_content_factors (the ridge and its predictions) on the published run's eval model and
its ratings; the number of thin and unrated movies at the run's min_ratings_to_score.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main() -> None:
    from recjobs.method import content, model
    from recjobs.settings import Settings
    from recjobs.storage import artifacts, publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = publish.published_run(Settings(db=args.db))
    run_id, recorded = run["run_id"], run["artifacts_dir"]
    train_seconds = json.loads(run["step_seconds_json"] or "{}").get("train")
    directory = Path(recorded)
    settings = artifacts.run_settings(Settings(), directory)
    min_ratings = settings.min_ratings_to_score or Settings().min_ratings_to_score
    factors = model.Factors.read(directory / artifacts.model_file(artifacts.EVAL))
    movies, tags = artifacts.read_movies_and_tags(directory)
    ratings = artifacts.read_ratings(directory)
    movie_ids = content.catalogue_movie_ids(factors.movie_ids, movies, min_ratings)
    n_ratings = np.bincount(model.index(ratings["movie_id"], movie_ids), minlength=len(movie_ids))
    item_factors = np.zeros((len(movie_ids), factors.item_factors.shape[1]), np.float32)
    item_factors[model.index(factors.movie_ids, movie_ids)] = factors.als_item_factors
    building, predicting = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        features = content.content_features(movies, tags, movie_ids)
        built = time.perf_counter()
        scored = content.with_content_factors(item_factors, features, n_ratings, min_ratings)
        building.append(built - started)
        predicting.append(time.perf_counter() - built)
    build_s, predict_s = statistics.median(building), statistics.median(predicting)
    print(
        f"run {run_id}: {len(movie_ids):,} catalogue movies, {len(ratings['movie_id']):,} ratings, {len(tags):,} tags"
    )
    print(f"| measure | median of {args.repeats} |\n|---|---|")
    print(f"| content rows of every movie | {build_s:.2f} s ({features.shape[1]:,} columns) |")
    print(f"| the ridge and the thin movies' factors | {predict_s:.2f} s |")
    print(f"| movies scored from content (min_ratings_to_score {min_ratings}) | {scored.n_movies:,} |")
    print(f"| of them unrated | {scored.n_unrated:,} |")
    if train_seconds is not None:
        print(f"| the run's whole train step (recorded) | {train_seconds:.1f} s |")


if __name__ == "__main__":
    main()
