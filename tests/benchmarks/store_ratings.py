"""Seconds and peak RSS of a first night's ratings write: every rating of a run into an empty
ratings table (`publish._store_ratings`), in this process. Run it at two commits to compare.

    python tests/benchmarks/store_ratings.py --run-dir artifacts/bench-scale/25M/artifacts/night1
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from recjobs.storage import artifacts, db, publish


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a run's artifacts folder (with ratings.npz)")
    args = parser.parse_args(argv)
    ratings = artifacts.read_ratings(args.run_dir)
    after_reading = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        with db.transaction(Path(scratch) / "recs.db") as conn:
            written = publish._store_ratings(conn, ratings)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{written.added:,} ratings in {seconds:.1f} s; peak RSS {peak:.2f} GB ({after_reading:.2f} GB after read)")


if __name__ == "__main__":
    main()
