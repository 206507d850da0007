"""The Spark engine (settings.engine = "spark"): the method's heavy parts as Spark jobs.

- ALS: pyspark.ml's ALS with implicitPrefs, on the implicit engine's own confidences;
- the cosine and sequence item-item parts: co-occurrence counts as DataFrame jobs (the
  sequence part pairs each rating with the user's next sequence_window ratings);
- per-user candidates: the ALS top spark_candidates of every user, written as Parquet files
  (artifacts/<run_id>/candidates_{eval,full}/) that evaluate and the score shards re-rank with
  the item-item and trending parts' own best movies (model.Fitted.recommend_candidates). The
  night fits once (candidates_eval); the published model's candidates are the same but for the
  users folded back in, whose candidates come from their re-solved factors (fold_candidates).

What it returns is the implicit engine's model.Fitted, saved as the same model files, so
evaluation, scoring and publishing are one code path for both engines. Spark runs in local
mode by default; with a spark:// master or an sc:// Spark Connect URL the cluster must see the
artifacts folder at the same path (shared storage). Data goes in and out as Parquet.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError
from ..settings import Settings
from ..storage import artifacts
from .model import FitReport, Fitted, Interactions, from_factors, matrix

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 5  # ALS iterations between checkpoints (Spark ignores it without a checkpoint folder)
# Factor rows stacked per block in recommendForAllUsers; 4096 and 512 took 20.1 s and 20.0 s at
# 1M ratings on 2 cores (tests/benchmarks/spark_blocks.py), so Spark's own default stays.
BLOCK_SIZE = 4096


def candidates_dir(directory: Path, name: str) -> Path:
    """The Parquet folder of the `name` model's per-user candidates (one row per user)."""
    return Path(directory) / f"candidates_{name}"


@contextmanager
def session(settings: Settings):
    """A SparkSession for the settings' master: local mode on loopback, a spark:// cluster, or
    Spark Connect (sc://). Stopped on exit."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("engine=spark needs pyspark; install the spark extra: pip install -e '.[spark]'") from None
    master = settings.spark_master
    builder = SparkSession.builder.appName("recjobs")
    if master.startswith("sc://"):
        builder = builder.remote(master)
    else:
        builder = builder.master(master).config("spark.driver.memory", settings.spark_driver_memory)
        builder = builder.config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        if master.startswith("local"):  # nothing leaves this machine
            builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    checkpoints = Path(settings.spark_checkpoint_dir).resolve()
    builder = builder.config("spark.checkpoint.dir", str(checkpoints))
    spark = builder.getOrCreate()
    if not master.startswith("sc://"):
        spark.sparkContext.setLogLevel("ERROR")
        spark.sparkContext.setCheckpointDir(str(checkpoints))
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions(spark, settings)))
    try:
        yield spark
    finally:
        spark.stop()


def partitions(spark, settings: Settings) -> int:
    """settings.spark_partitions, or when 0 Spark's default parallelism: the cores in local
    mode; under Spark Connect (no SparkContext) the server's spark.default.parallelism, else
    ALS's own default of 10 blocks (not the 200 shuffle partitions, far too many ALS blocks)."""
    if settings.spark_partitions:
        return settings.spark_partitions
    if settings.spark_master.startswith("sc://"):
        return int(spark.conf.get("spark.default.parallelism", "10"))
    return spark.sparkContext.defaultParallelism


def write_parquet(path: Path, **columns: np.ndarray) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({name: np.ascontiguousarray(values) for name, values in columns.items()}), path)
    return str(path)


def to_numpy(frame, *columns: str) -> list[np.ndarray]:
    """Collect a DataFrame's columns to the driver as numpy arrays (through Arrow)."""
    table = frame.select(*columns).toArrow()
    return [table.column(name).to_numpy() for name in columns]


def factor_matrix(frame, n_rows: int, rank: int) -> np.ndarray:
    """ALS userFactors / itemFactors (id, features) as rows x rank; rows Spark never saw are 0."""
    table = frame.toArrow()
    ids = table.column("id").to_numpy()
    features = table.column("features").combine_chunks().flatten().to_numpy().reshape(-1, rank)
    out = np.zeros((n_rows, rank), np.float32)
    out[ids] = features
    return out


def item_similarity(spark, positives_path: str, n_items: int, settings: Settings) -> sp.csr_matrix | None:
    """Cosine item-item similarity of the positives (co-count / sqrt(n_i * n_j)), the
    item_neighbours nearest per movie, itself left out; as model.item_similarity."""
    if settings.blend_weight <= 0:
        return None
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    positives = spark.read.parquet(positives_path)
    counts = positives.groupBy("item").agg(F.count("*").alias("n"))
    upper = (  # each pair counted once (i < j), then mirrored: 1.5x faster than both ways
        positives.alias("a")
        .join(positives.alias("b"), "user")
        .where(F.col("a.item") < F.col("b.item"))
        .groupBy(F.col("a.item").alias("i"), F.col("b.item").alias("j"))
        .agg(F.count("*").alias("together"))
    )
    pairs = upper.unionByName(upper.select(F.col("j").alias("i"), F.col("i").alias("j"), "together"))
    cosine = (
        pairs.join(counts.select(F.col("item").alias("i"), F.col("n").alias("n_i")), "i")
        .join(counts.select(F.col("item").alias("j"), F.col("n").alias("n_j")), "j")
        .select("i", "j", (F.col("together") / F.sqrt(F.col("n_i") * F.col("n_j"))).alias("value"))
    )
    nearest = Window.partitionBy("i").orderBy(F.col("value").desc(), F.col("j"))
    top = cosine.withColumn("place", F.row_number().over(nearest)).where(F.col("place") <= settings.item_neighbours)
    return matrix(*to_numpy(top, "i", "j", "value"), (n_items, n_items))


def sequence_similarity(spark, sequence_path: str, n_items: int, settings: Settings) -> sp.csr_matrix | None:
    """How often two movies were rated within sequence_window ratings of each other by the same
    user, over sqrt(n_i * n_j); the item_neighbours largest per movie, ties at the cut kept; as
    model.sequence_similarity. `sequence_path` holds every rating (user, item) with `at`, its
    place in (user, time, movie id) order; a window over each user's ratings numbers them."""
    if settings.sequence_weight <= 0:
        return None
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    in_order = Window.partitionBy("user").orderBy("at")  # each user's ratings by (time, movie id)
    ratings = spark.read.parquet(sequence_path).withColumn("place", F.row_number().over(in_order))
    offsets = spark.range(1, settings.sequence_window + 1).withColumnRenamed("id", "offset")
    earlier = ratings.crossJoin(offsets).select(
        "user", (F.col("place") + F.col("offset")).alias("place"), F.col("item").alias("earlier")
    )
    near = ratings.join(earlier, ["user", "place"]).where(F.col("item") != F.col("earlier"))
    both_ways = near.select(F.col("earlier").alias("i"), F.col("item").alias("j")).unionAll(
        near.select(F.col("item").alias("i"), F.col("earlier").alias("j"))
    )
    counts = ratings.groupBy("item").agg(F.count("*").alias("n"))
    scaled = (
        both_ways.groupBy("i", "j")
        .agg(F.count("*").alias("together"))
        .join(counts.select(F.col("item").alias("i"), F.col("n").alias("n_i")), "i")
        .join(counts.select(F.col("item").alias("j"), F.col("n").alias("n_j")), "j")
        .select("i", "j", (F.col("together") / F.sqrt(F.col("n_i") * F.col("n_j"))).alias("value"))
    )
    largest = Window.partitionBy("i").orderBy(F.col("value").desc())
    top = scaled.withColumn("place", F.rank().over(largest)).where(F.col("place") <= settings.item_neighbours)
    return matrix(*to_numpy(top, "i", "j", "value"), (n_items, n_items))


def als_estimator(settings: Settings, blocks: int):
    """pyspark.ml's implicit ALS with the settings' rank, iterations and regParam on `blocks`
    user and item blocks, over (user, item, rating) columns with rating = confidence - 1."""
    from pyspark.ml.recommendation import ALS

    return ALS(
        rank=settings.factors,
        maxIter=settings.iterations,
        regParam=settings.spark_regularization,
        implicitPrefs=True,
        alpha=1.0,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        blockSize=BLOCK_SIZE,
        checkpointInterval=CHECKPOINT_EVERY,
        seed=settings.random_seed,
    )


def fit_method(spark, data: Interactions, settings: Settings, directory: Path, name: str) -> Fitted:
    """The method's three parts fitted in Spark on `data`, and its per-user ALS candidates
    written to candidates_dir(directory, name) (evaluate and the score shards re-rank them)."""
    n_users, n_items = data.seen.shape
    staging = Path(directory) / f"spark_input_{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    confidence = data.confidence.tocoo()
    positives = data.positives.tocoo()
    inputs = {
        "confidence": write_parquet(
            staging / "confidence.parquet",
            user=confidence.row.astype(np.int32),
            item=confidence.col.astype(np.int32),
            # Spark's implicit confidence is 1 + alpha * rating: with alpha 1, ours exactly
            rating=(confidence.data - 1.0).astype(np.float32),
        ),
        "positives": write_parquet(
            staging / "positives.parquet", user=positives.row.astype(np.int32), item=positives.col.astype(np.int32)
        ),
        "sequence": write_parquet(
            staging / "sequence.parquet",
            user=data.sequence_users.astype(np.int32),
            item=data.sequence_items.astype(np.int32),
            at=np.arange(len(data.sequence_items), dtype=np.int64),
        ),
    }
    blocks = partitions(spark, settings)
    started = time.perf_counter()
    als = als_estimator(settings, blocks).fit(spark.read.parquet(inputs["confidence"]))
    factors = from_factors(
        factor_matrix(als.userFactors, n_users, settings.factors),
        factor_matrix(als.itemFactors, n_items, settings.factors),
        settings,
    )
    seconds = {"als": time.perf_counter() - started}
    started = time.perf_counter()
    cosine = item_similarity(spark, inputs["positives"], n_items, settings)
    seconds["cosine"] = time.perf_counter() - started
    started = time.perf_counter()
    sequence = sequence_similarity(spark, inputs["sequence"], n_items, settings)
    seconds["sequence"] = time.perf_counter() - started
    started = time.perf_counter()
    fitted = Fitted(factors, cosine, sequence, FitReport(settings.iterations, float("nan"), False))
    candidates = candidates_dir(directory, name)
    shutil.rmtree(candidates, ignore_errors=True)
    (
        als.recommendForAllUsers(settings.spark_candidates)
        .selectExpr("user", "recommendations.item AS items")
        .repartition(blocks)
        .write.parquet(str(candidates))
    )
    seconds["candidates"] = time.perf_counter() - started
    log.info("spark %s model: %s", name, ", ".join(f"{part} {value:.1f} s" for part, value in seconds.items()))
    shutil.rmtree(staging, ignore_errors=True)
    return fitted


def read_candidates(directory: Path, name: str, rows: np.ndarray) -> dict[int, np.ndarray] | None:
    """The Spark candidates (item rows, best ALS score first) of the given user rows; None
    when the run has none (the implicit engine)."""
    path = candidates_dir(directory, name)
    if not path.is_dir():
        return None
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(path, format="parquet").to_table(filter=pc.field("user").isin(np.asarray(rows, np.int32)))
    users = table.column("user").to_numpy()
    items = table.column("items").to_pylist()
    return {int(user): np.asarray(found, np.int64) for user, found in zip(users, items, strict=True)}


def fold_candidates(directory: Path, rows: np.ndarray, als, settings: Settings, batch: int = 1024) -> Path | None:
    """The published model's candidates (candidates_full): the one fit's, but for the folded-in
    user `rows`, whose ALS top spark_candidates come from `als` (their re-solved factors). None
    for a run without Spark candidates (the implicit engine)."""
    source, target = candidates_dir(directory, artifacts.EVAL), candidates_dir(directory, artifacts.FULL)
    if not source.is_dir():
        return None
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    table = ds.dataset(source, format="parquet").to_table()
    rows = np.asarray(rows, np.int64)
    kept = table.filter(pc.invert(pc.is_in(table.column("user"), pa.array(rows.astype(np.int32)))))
    n = min(settings.spark_candidates, als.item_factors.shape[0])
    found = []
    for start in range(0, len(rows), batch):
        scores = als.user_factors[rows[start : start + batch]] @ als.item_factors.T
        top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        found.extend(np.take_along_axis(top, order, axis=1).tolist())
    folded = pa.table({"user": pa.array(rows.astype(np.int32)), "items": pa.array(found)}).cast(kept.schema)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    pq.write_table(kept, target / "part-fit.parquet")
    pq.write_table(folded, target / "part-folded.parquet")
    return target
