"""The per-run folder, artifacts/<run_id>/: its file names, atomic writes and the readers.

Every job finds its inputs and leaves its outputs here; no other module spells a file name.
Light on purpose (numpy only at import): the cold-start command reads through it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, StateError

# file name -> the job that writes it
RATINGS = "ratings.npz"  # load: every loaded rating, (user, time, movie) order
MOVIES = "movies.pkl"  # load: the catalog, published with the run
TAGS = "tags.pkl"  # load
HIDDEN = "hidden.npz"  # load: incoming/hidden*.csv, the movies users hid
SPLIT = "split.npz"  # split: the holdout part of every rating (recjobs.evaluation.holdout)
PARAMS = "params.json"  # train: the settings that decide the model
METRICS = "metrics.json"  # evaluate
REPORT = "report.md"  # evaluate
PLOT = "metrics.png"  # evaluate
COLD_START_METRICS = "cold_start_metrics.json"  # evaluate_cold_start
COLD_START_BUNDLE = "cold_start"  # evaluate_cold_start (or the first request): a folder
EVAL, FULL = "eval", "full"  # the two fitted models of a run: evaluated, published
# A top list shorter than asked is padded with movies scored FILTERED (the score implicit gives
# a filtered, already rated movie); padding is never shown or stored.
FILTERED = -float(np.finfo(np.float32).max)


def is_filtered(scores: np.ndarray) -> np.ndarray:
    """True where a top list holds padding (a filtered movie), never to be shown."""
    return np.asarray(scores) <= FILTERED / 2


def model_file(name: str) -> str:
    """ALS factors and the id maps of the `name` model (train)."""
    return f"model_{name}.npz"


def similarity_file(name: str) -> str:
    """Cosine item-item matrix of the `name` model (train; absent when blend_weight is 0)."""
    return f"item_similarity_{name}.npz"


def sequence_file(name: str) -> str:
    """Sequence item-item matrix of the `name` model (train; absent when sequence_weight is 0)."""
    return f"item_sequence_{name}.npz"


WRITTEN_BY = {
    RATINGS: "load",
    MOVIES: "load",
    TAGS: "load",
    SPLIT: "split",
    PARAMS: "train",
    **{model_file(name): "train" for name in (EVAL, FULL)},
}
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r} is not valid; expected 1-100 letters, digits, '_', '.' or '-'")
    return run_id


def run_dir(artifacts: Path, run_id: str) -> Path:
    """artifacts/<run_id>/ (not created)."""
    return Path(artifacts) / check_run_id(run_id)


def served_run_dir(artifacts_root: Path, run_id: str, artifacts_dir: str | None) -> Path:
    """<artifacts_root>/<run_id> (so a copied or moved database reads the folder it was given),
    else the folder recorded in model_runs when only that one holds the run's model."""
    given = run_dir(artifacts_root, run_id)
    model = model_file(FULL)
    if not (given / model).is_file() and artifacts_dir and (Path(artifacts_dir) / model).is_file():
        return Path(artifacts_dir)
    return given


def require(directory: Path, name: str) -> Path:
    """The path of a file an earlier job wrote, or a StateError naming that job."""
    path = Path(directory) / name
    if not path.is_file():
        step = WRITTEN_BY.get(name, "run")
        raise StateError(f"{path}: not found; run `recjobs {step}` for this run id first")
    return path


def write_atomically(path: Path, write) -> Path:
    """Call write(temp_path), then rename the temp file over `path`: a reader of `path` sees
    the old file or the new one, never a half-written one. The temp name is per process."""
    path = Path(path)
    temp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def link_or_copy(source: Path, target: Path) -> None:
    """target as a hard link to source (a copy where links are not allowed); none if no source."""
    target.unlink(missing_ok=True)
    if source.is_file():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def write_json(path: Path, data) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    return write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---- ratings and split --------------------------------------------------------------

RATING_ARRAYS = {"user_id": np.int64, "movie_id": np.int64, "rating": np.float32, "rated_at": np.int64}


def save_ratings(directory: Path, ratings) -> Path:
    """ratings: a frame or a dict with the RATING_ARRAYS columns."""
    arrays = {name: np.asarray(ratings[name]).astype(kind) for name, kind in RATING_ARRAYS.items()}
    return write_atomically(Path(directory) / RATINGS, lambda temp: np.savez(temp, **arrays))


def read_ratings(directory: Path) -> dict[str, np.ndarray]:
    """The run's ratings as arrays: user_id, movie_id, rating, rated_at."""
    with np.load(require(directory, RATINGS)) as f:
        return {name: f[name] for name in RATING_ARRAYS}


def save_parts(directory: Path, parts: np.ndarray, **plan: np.ndarray) -> Path:
    """The holdout part of every rating, and the night's plan (recjobs.evaluation.holdout.NightPlan)."""
    return write_atomically(Path(directory) / SPLIT, lambda temp: np.savez(temp, part=parts, **plan))


def read_plan(directory: Path) -> dict[str, np.ndarray]:
    """The night's plan arrays split saved beside the parts (empty for a run split before plans)."""
    with np.load(require(directory, SPLIT)) as f:
        return {name: f[name] for name in f.files if name != "part"}


def read_parts(directory: Path) -> np.ndarray:
    with np.load(require(directory, SPLIT)) as f:
        return f["part"]


def read_params(directory: Path) -> dict:
    return read_json(require(directory, PARAMS))


def run_settings(settings, directory: Path):
    """`settings` with the blend weights the run's train step chose or kept (its params.json's
    "blend"): what every later step of the run scores with. A run trained before blends were
    chosen scores with the settings as they are."""
    from ..settings import BLEND_WEIGHTS

    blend = read_params(directory).get("blend")
    if not blend:
        return settings
    return settings.replace(**{name: blend[name] for name in BLEND_WEIGHTS})


def run_model_settings(settings, directory: Path):
    """`settings` with every model setting of the run's params.json and its blend: what scores
    like the run whatever the caller's own settings are (a refresh between nights)."""
    params = read_params(directory)
    own = {name: params[name] for name in settings.model_params() if name in params}
    return run_settings(settings.replace(**own), directory)


# ---- the catalog published with the run ---------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """Validated, merged input data (pandas frames, columns named as in sql/schema.sql)."""

    movies: object  # movie_id, title, genres, year, imdb_id, tmdb_id
    ratings: object  # user_id, movie_id, rating, rated_at
    tags: object  # user_id, movie_id, tag, tagged_at
    hidden: object = None  # user_id, movie_id, hidden_at: incoming/hidden*.csv ("not interested")
    n_incoming_files: int = 0
    n_dropped_ratings: int = 0
    data_sha256: str = ""


def save_catalog(directory: Path, catalog: Catalog) -> None:
    """The run's ratings (ratings.npz) and the movies and tags it publishes with."""
    save_ratings(directory, catalog.ratings)
    hidden = catalog.hidden if catalog.hidden is not None else {c: [] for c in HIDDEN_ARRAYS}
    write_atomically(
        Path(directory) / HIDDEN,
        lambda temp: np.savez(temp, **{c: np.asarray(hidden[c], np.int64) for c in HIDDEN_ARRAYS}),
    )
    write_atomically(Path(directory) / MOVIES, catalog.movies.to_pickle)
    write_atomically(Path(directory) / TAGS, catalog.tags.to_pickle)


HIDDEN_ARRAYS = ("user_id", "movie_id", "hidden_at")


def read_hidden(directory: Path) -> dict[str, np.ndarray]:
    """The hidden movies `load` read for the run (none for a run loaded before they existed)."""
    path = Path(directory) / HIDDEN
    if not path.is_file():
        return {c: np.empty(0, np.int64) for c in HIDDEN_ARRAYS}
    with np.load(path) as f:
        return {c: f[c] for c in HIDDEN_ARRAYS}


def read_movies(directory: Path):
    """The movies data frame `load` saved for the run."""
    import pandas as pd

    return pd.read_pickle(require(directory, MOVIES))


def read_movies_and_tags(directory: Path):
    """(movies, tags) data frames `load` saved for the run, without its ratings."""
    import pandas as pd

    return read_movies(directory), pd.read_pickle(require(directory, TAGS))


def read_stored_catalog(directory: Path, ratings: dict | None = None) -> Catalog:
    """The catalog `load` saved for the run (`ratings`: its read_ratings, when already read)."""
    import pandas as pd

    movies, tags = read_movies_and_tags(directory)
    ratings = pd.DataFrame(read_ratings(directory) if ratings is None else ratings)
    ratings["rating"] = ratings["rating"].astype(float)
    return Catalog(movies=movies, ratings=ratings, tags=tags)
