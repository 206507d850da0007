"""The one settings object: every job, the CLI, the DAG params and the README read it."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

# settings that are paths: relative ones are resolved against the project folder by the DAGs
PATH_SETTINGS = ("data_dir", "db", "artifacts", "spark_checkpoint_dir")
ENGINES = ("implicit", "spark")
SPARK_MASTER = re.compile(r"^(local(\[(\*|[1-9][0-9]*)\])?|spark://[^\s/]+(/.*)?|sc://[^\s/]+(/.*)?)$")
MEMORY = re.compile(r"^[1-9][0-9]*[kmgt]?$")
# the blend weights a full night chooses (recjobs.evaluation.blend_choice); a run's params.json has its own
BLEND_WEIGHTS = ("trend_weight", "trend_days", "blend_weight", "sequence_weight")


def setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(
        Path("data_small"), "Folder with movies.csv and ratings.csv; optional links.csv, tags.csv and incoming/*.csv."
    )
    db: Path = setting(Path("artifacts/recs.db"), "SQLite database the recommendations are published to.")
    artifacts: Path = setting(Path("artifacts"), "Folder for per-run model files (artifacts/<run_id>/).")
    k: int = setting(50, "Recommendations stored per user.")
    rules: str = setting(
        "",
        "TOML file of business rules (excluded movies and genres, years, availability windows; docs/refresh.md), "
        "applied by precompute, refresh and cold start (empty: none).",
    )
    n_similar: int = setting(20, "Similar movies stored per movie.")
    factors: int = setting(64, "ALS latent factors.")
    regularization: float = setting(0.2, "ALS L2 regularization.")
    iterations: int = setting(20, "ALS iterations, at most (fewer once the factors have converged).")
    als_tolerance: float = setting(
        0.025,
        "ALS stops when an iteration changes the item factors by less than this (relative); 0: every iteration.",
    )
    warm_start: bool = setting(
        True, "Start the night's ALS fits from the published run's factors (matched by id) when there is one."
    )
    alpha: float = setting(80.0, "Confidence of a positive rating: 1 + alpha * weight.")
    negative_weight: float = setting(0.0, "Weight of ratings below the positive threshold (0 = ignore them).")
    positive_threshold: float = setting(4.0, "Ratings at or above this are positives.")
    recency_decay: float = setting(
        10.0,
        "A rating's weight is multiplied by exp(-age / this), age = how many of the user's ratings "
        "came after it (0 = no recency weighting).",
    )
    blend_weight: float = setting(
        0.5, "Weight of item-item cosine scores blended with ALS scores, both standardized per user (0 = ALS alone)."
    )
    item_neighbours: int = setting(200, "Most similar movies kept per movie for the item-item blends.")
    sequence_weight: float = setting(
        1.0, "Weight of sequence scores (movies rated near the user's last few, by other users) blended in (0 = off)."
    )
    sequence_window: int = setting(10, "Two ratings of a user count as near when at most this many ratings apart.")
    sequence_decay: float = setting(
        3.0, "The user's last few ratings for the sequence scores: weight exp(-age / this)."
    )
    item_item_min_weight: float = setting(
        0.001,
        "A user's ratings weighted below this (recency or sequence decay) are left out of their item-item scores "
        "(0: every rating counts).",
    )
    trend_weight: float = setting(
        0.5,
        "Weight of trending movies (log positives in the --trend-days before now) blended in (0 = off).",
    )
    trend_days: float = setting(
        30.0, "The trending part counts the positives of this many days before now (the newest rating)."
    )
    choose_blend: bool = setting(
        True,
        "Full nights choose trend_weight, trend_days and the item-item weights on the latest windows of the data "
        "(the temporal protocol); usual nights reuse the choice (off: the configured weights every night).",
    )
    choice_window_days: float = setting(
        14.0, "The blend choice scores each fit on the positives of this many days after the ratings it was fitted on."
    )
    choice_windows: int = setting(4, "The blend choice pools this many consecutive windows before now, one fit each.")
    choice_min_user_windows: int = setting(
        100,
        "Fewer user-windows than this and the blend choice keeps the previous choice (or the configured weights), "
        "and the gate uses leave-last-out.",
    )
    diversity: float = setting(
        0.0,
        "Re-rank each list by MMR over the ALS item factors: 0 keeps the method's order, 1 favours variety most "
        "(docs/quality.md: the backtest's table; 0 was best).",
    )
    min_ratings_to_score: int = setting(
        5,
        "Movies of the catalogue with fewer ratings than this (unrated ones too) are scored from their content "
        "(genres, year, tags mapped onto the ALS factors), so new movies can enter lists (0: off; docs/quality.md).",
    )
    random_seed: int = setting(42, "Seed for ALS initialisation.")
    eval_users: int = setting(
        20_000,
        "Test users evaluated: a seeded random sample when there are more (the intervals show its error; 0: all).",
    )
    cold_start_eval_users: int = setting(
        2_000,
        "New users the cold-start evaluation holds out: a seeded 20% of those eligible, at most this many (0: no cap).",
    )
    full_evaluation_every: int = setting(
        7,
        "A full night (the reference recipe and the cold-start protocol with their own fits) every this many "
        "nights; also the first night and any night whose model settings change (1: every night).",
    )
    full_evaluation: bool = setting(False, "Make this night a full night whatever the cadence (`recjobs run --full`).")
    keep_published: int = setting(3, "Published runs kept for rollback; older runs' rows are deleted.")
    gate_tolerance: float = setting(
        0.10, "A run is rejected if its Recall@10 is this much (relative) below the published run's."
    )
    max_churn: float = setting(
        0.0,
        "Reject a run whose churn@10 on users with no new rating (1 - Jaccard of their top 10 against the "
        "published run's) is above this, unless its Recall@10 gained (0: off).",
    )
    engine: str = setting(
        "implicit",
        "Where the heavy parts of train run: implicit (this machine) or spark (ALS, item-item counts and per-user "
        "candidates as Spark jobs, at spark_master).",
    )
    score_shards: int = setting(
        2, "User ranges scored apart (the DAG maps one score_shard task over each); the published rows are the same."
    )
    spark_master: str = setting(
        "local[*]", "Spark master for engine=spark: local[N], spark://host:port, or a Spark Connect sc://host:port URL."
    )
    spark_driver_memory: str = setting("2g", "Spark driver memory for engine=spark (local mode: all of Spark's).")
    spark_partitions: int = setting(
        0,
        "Spark shuffle partitions and ALS user and item blocks for engine=spark; 0: Spark's default parallelism "
        "(local mode: the cores).",
    )
    spark_checkpoint_dir: Path = setting(
        Path("artifacts/spark-checkpoints"),
        "Spark checkpoint folder for engine=spark (ALS checkpoints; on a cluster, shared storage).",
    )
    spark_regularization: float = setting(
        0.01,
        "Spark ALS regParam for engine=spark (Spark scales it by each user's and movie's number of ratings; "
        "implicit does not).",
    )
    spark_candidates: int = setting(
        200, "engine=spark: ALS candidates per user from Spark, re-ranked with the item-item and trending parts."
    )
    refresh_schedule: str = setting(
        "* * * * *", "When the movie_recs_refresh DAG runs (cron, UTC): new files of incoming/ reach the lists."
    )
    serve_workers: int = setting(0, "Server processes of `recjobs serve` (0: one per CPU core).")
    job_nice: int = setting(
        10,
        "The nightly steps lower their CPU priority by this much (nice), so a server on the machine keeps its speed.",
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("Path",) and not isinstance(value, Path):
                object.__setattr__(self, f.name, Path(value))
        checks = {
            "k": 1 <= self.k <= 1000,
            "n_similar": 1 <= self.n_similar <= 1000,
            "factors": 1 <= self.factors <= 2048,
            "regularization": self.regularization >= 0,
            "iterations": 1 <= self.iterations <= 1000,
            "als_tolerance": 0 <= self.als_tolerance < 1,
            "alpha": self.alpha > 0,
            "negative_weight": self.negative_weight >= 0,
            "positive_threshold": 0.5 <= self.positive_threshold <= 5.0,
            "recency_decay": self.recency_decay >= 0,
            "blend_weight": self.blend_weight >= 0,
            "item_neighbours": 1 <= self.item_neighbours <= 10000,
            "sequence_weight": self.sequence_weight >= 0,
            "sequence_window": 1 <= self.sequence_window <= 1000,
            "sequence_decay": self.sequence_decay > 0,
            "item_item_min_weight": 0 <= self.item_item_min_weight < 1,
            "trend_weight": self.trend_weight >= 0,
            "trend_days": self.trend_days > 0,
            "choice_window_days": self.choice_window_days > 0,
            "choice_windows": 1 <= self.choice_windows <= 52,
            "choice_min_user_windows": self.choice_min_user_windows >= 1,
            "eval_users": self.eval_users >= 0,
            "cold_start_eval_users": self.cold_start_eval_users >= 0,
            "full_evaluation_every": 1 <= self.full_evaluation_every <= 10_000,
            "keep_published": self.keep_published >= 1,
            "gate_tolerance": 0 <= self.gate_tolerance < 1,
            "max_churn": 0 <= self.max_churn <= 1,
            "diversity": 0 <= self.diversity <= 1,
            "min_ratings_to_score": 0 <= self.min_ratings_to_score <= 1000,
            "engine": self.engine in ENGINES,
            "score_shards": 1 <= self.score_shards <= 1000,
            "spark_master": bool(SPARK_MASTER.match(self.spark_master)),
            "spark_driver_memory": bool(MEMORY.match(self.spark_driver_memory.lower())),
            "spark_partitions": 0 <= self.spark_partitions <= 100_000,
            "spark_regularization": self.spark_regularization >= 0,
            "spark_candidates": self.k <= self.spark_candidates <= 10_000,
            "serve_workers": 0 <= self.serve_workers <= 64,
            "job_nice": 0 <= self.job_nice <= 19,
            "refresh_schedule": len(self.refresh_schedule.split()) == 5,
        }
        for name, ok in checks.items():
            if not ok:
                hint = f"expected {EXPECTED[name]}" if name in EXPECTED else "see `recjobs run --help`"
                raise ConfigError(f"setting {name}={getattr(self, name)!r} is out of range; {hint}")

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def model_params(self) -> dict:
        """The settings that decide the model: stored with every run."""
        names = (
            "factors",
            "regularization",
            "iterations",
            "als_tolerance",
            "warm_start",
            "alpha",
            "negative_weight",
            "positive_threshold",
            "recency_decay",
            "blend_weight",
            "item_neighbours",
            "sequence_weight",
            "sequence_window",
            "sequence_decay",
            "item_item_min_weight",
            "trend_weight",
            "trend_days",
            "choose_blend",
            "choice_window_days",
            "choice_windows",
            "choice_min_user_windows",
            "random_seed",
            "engine",
            "spark_regularization",
            "spark_candidates",
            "k",
            "n_similar",
            "diversity",
            "min_ratings_to_score",
        )
        return {name: getattr(self, name) for name in names}


def setting_help() -> dict[str, tuple[object, str]]:
    """name -> (default, help), in declaration order."""
    return {f.name: (f.default, f.metadata["help"]) for f in dataclasses.fields(Settings)}


TABLE_BEGIN = (
    "<!-- settings table: generated by `make docs-settings` from recjobs.settings; tests/test_docs.py checks it -->"
)
TABLE_END = "<!-- end of the settings table -->"


def settings_table() -> str:
    """The Markdown table of every setting: CLI option, environment variable, default, help."""
    rows = ["| option | environment | default | what it does |", "|---|---|---|---|"]
    for name, (default, help) in setting_help().items():
        rows.append(f"| `--{name.replace('_', '-')}` | `RECJOBS_{name.upper()}` | `{default}` | {help} |")
    return "\n".join(rows)


def with_settings_table(page: str) -> str:
    """A docs page with the text between its settings-table markers replaced by settings_table()."""
    if TABLE_BEGIN not in page or TABLE_END not in page:
        raise ConfigError(f"the page has no settings-table markers; expected {TABLE_BEGIN!r} ... {TABLE_END!r}")
    head, rest = page.split(TABLE_BEGIN, 1)
    return f"{head}{TABLE_BEGIN}\n\n{settings_table()}\n\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}"


EXPECTED = {
    "refresh_schedule": "a cron expression of 5 fields, such as '* * * * *' or '*/5 * * * *'",
    "engine": " or ".join(ENGINES),
    "spark_master": "local[*], local[N], spark://host:port or sc://host:port",
    "spark_driver_memory": "a size such as 2g or 512m",
    "spark_candidates": "at least k, at most 10000",
    "spark_partitions": "0 (Spark's default parallelism) up to 100000",
}

BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def from_env(environ=os.environ, **overrides) -> Settings:
    """Settings from RECJOBS_<NAME> environment variables, then explicit overrides."""
    values = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(f"RECJOBS_{f.name.upper()}")
        if raw is None or raw == "":
            continue
        kind = type(f.default)
        try:
            if kind is bool:
                values[f.name] = BOOLEANS[raw.strip().lower()]
            else:
                values[f.name] = Path(raw) if isinstance(f.default, Path) else kind(raw)
        except (ValueError, KeyError):
            expected = "; expected true or false" if kind is bool else ""
            raise ConfigError(f"RECJOBS_{f.name.upper()}={raw!r} is not a valid {kind.__name__}{expected}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
