"""Seconds of one fit's sequence matrix (`model.sequence_similarity`) on a run's ratings, and a
digest of the matrix, so two commits can be compared for speed and for the same result.

    python tests/benchmarks/sequence_blocks.py --run-dir artifacts/bench-scale/25M/artifacts/night2
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from recjobs.method import model
from recjobs.settings import Settings
from recjobs.storage import artifacts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a run's artifacts folder (with ratings.npz)")
    args = parser.parse_args(argv)
    settings = Settings()
    ratings = artifacts.read_ratings(args.run_dir)
    user_ids, movie_ids = np.unique(ratings["user_id"]), np.unique(ratings["movie_id"])
    data = model.interactions(ratings, np.ones(len(ratings["user_id"]), bool), user_ids, movie_ids, settings)
    started = time.perf_counter()
    sequence = model.sequence_similarity(data, len(movie_ids), settings)
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for part in (sequence.indptr, sequence.indices, sequence.data):
        digest.update(np.ascontiguousarray(part).tobytes())
    print(f"sequence matrix: {sequence.nnz:,} entries in {seconds:.1f} s; sha256 {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
