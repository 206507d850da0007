"""How Spark's ALS blocks and blockSize change its fit and recommendForAllUsers, in local mode.

    python tests/benchmarks/spark_blocks.py --data /tmp/bench-scale/data-1M --blocks 8,2 --block-sizes 4096,512

Reads a MovieLens-layout ratings.csv, keeps ratings of 3.5 and up as positives (confidence 1),
fits the night's ALS (spark_engine.als_estimator with the default settings: rank 64, at most 20
iterations, implicitPrefs) once per number of user and item blocks, and
times recommendForAllUsers(200) written as Parquet for each blockSize. One run, wall seconds;
docs/scaling.md quotes it. The night's own settings: spark_partitions (the blocks) and
spark_engine.BLOCK_SIZE.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with a MovieLens-layout ratings.csv")
    parser.add_argument("--blocks", default="8,2", help="comma-separated numbers of ALS user and item blocks")
    parser.add_argument("--block-sizes", default="4096,512", help="comma-separated ALS blockSize values")
    args = parser.parse_args(argv)
    from pyspark.sql import SparkSession

    from recjobs.method import spark_engine
    from recjobs.settings import Settings

    ratings = pd.read_csv(args.data / "ratings.csv", usecols=["userId", "movieId", "rating"])
    positives = ratings[ratings.rating >= 3.5]
    work = Path(tempfile.mkdtemp(prefix="spark-blocks-"))
    pq.write_table(
        pa.table(
            {
                "user": positives.userId.astype("category").cat.codes.to_numpy(np.int32),
                "item": positives.movieId.astype("category").cat.codes.to_numpy(np.int32),
                "rating": np.ones(len(positives), np.float32),
            }
        ),
        work / "positives.parquet",
    )
    print(f"{len(positives):,} positives", flush=True)
    spark = (
        SparkSession.builder.master("local[*]")
        .config("spark.driver.memory", "2g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.setCheckpointDir(str(work / "checkpoints"))
    frame = spark.read.parquet(str(work / "positives.parquet")).cache()
    frame.count()
    try:
        for blocks in [int(b) for b in args.blocks.split(",")]:
            spark.conf.set("spark.sql.shuffle.partitions", str(blocks))
            started = time.perf_counter()
            als = spark_engine.als_estimator(Settings(), blocks).fit(frame)
            als.userFactors.count()
            fit = time.perf_counter() - started
            for block_size in [int(b) for b in args.block_sizes.split(",")]:
                als.setBlockSize(block_size)
                started = time.perf_counter()
                als.recommendForAllUsers(200).write.mode("overwrite").parquet(str(work / "candidates"))
                top = time.perf_counter() - started
                print(
                    f"blocks {blocks}: fit {fit:.1f} s; blockSize {block_size}: recommendForAllUsers(200) {top:.1f} s",
                    flush=True,
                )
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
