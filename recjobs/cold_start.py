"""cold_start: recommendations for a new user who names a few liked movies, without retraining.

The new user is folded into the published model with one ALS least-squares step on its
item factors Y (implicit's `recalculate_user`, in closed form):

    x = (YᵀY + Yᵀ(Cu − I)Y + λI)⁻¹ Yᵀ Cu p(u)

where every liked movie is a positive with the confidence the model was trained with
(1 + alpha, as `recjobs.model.confidence` gives a positive). With no liked movie known to
the model the answer is the run's popularity list; with very few it is blended toward
popularity (see BLEND_* and the README's "Cold start" figures).

When the run blends ALS with item-item scores (recjobs.model.Fitted.scores: cosine of
positives, sequence neighbours), the folded-in user gets the same blend, each liked movie
weighted 1 ("as if newest").

Kept light on purpose: this module imports numpy and recjobs.db only, never pandas,
scipy, implicit, Airflow or the training steps. A run's serving bundle
(artifacts/<run_id>/cold_start/: movie ids, item factors, YᵀY, popularity, the item-item
matrices as CSR arrays, params) is written once per run, memory-mapped and cached.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import db
from .errors import ConfigError, StateError
from .settings import Settings

log = logging.getLogger(__name__)

MAX_LIKED = 100
MAX_K = 100
MAX_MOVIE_ID = 2**31 - 1
BUNDLE_NAME = "cold_start"
# With 1 to BLEND_MAX_KNOWN liked movies known, the fold-in is blended toward popularity with
# weight BLEND_PRIOR / (BLEND_PRIOR + known): popularity counts as BLEND_PRIOR pseudo-movies.
# Chosen on held-out users (recjobs.cold_start_eval, README "Cold start"; priors 5-40 tried on
# two seeded draws): it beat both the plain fold-in and popularity at N = 1, 3, 5, 10, 20, 40.
# Above 40 known (not measured) the plain fold-in is served.
BLEND_MAX_KNOWN = 40
BLEND_PRIOR = 20.0
LIKED_EXAMPLE = "e.g. --liked 296,318,593"


@dataclass(frozen=True)
class ColdStartResult:
    request_id: int
    run_id: str
    method: str                     # 'als_fold_in', 'blend' or 'popularity'
    liked: tuple[int, ...]          # as given, duplicates collapsed
    unknown_ids: tuple[int, ...]    # liked ids the served model does not know
    k: int
    recommendations: tuple[tuple[int, str | None, float], ...]   # (movie_id, title, score), best first
    seconds: float


@dataclass(frozen=True)
class Bundle:
    """What a run needs to answer cold-start requests (arrays may be read-only memory maps)."""
    run_id: str
    movie_ids: np.ndarray       # sorted MovieLens ids, row order of item_factors
    item_factors: np.ndarray    # float32, items x factors
    gram: np.ndarray            # float64 YᵀY
    popularity: np.ndarray      # float64, positives per movie in the training ratings
    alpha: float
    regularization: float
    # the run's item-item parts blended with ALS (recjobs.model.Fitted.scores), in ITEM_PARTS
    # order: (weight, (indptr, indices, data) of the items x items CSR matrix)
    item_parts: tuple = ()

    @property
    def liked_confidence(self) -> float:
        # a liked movie is a positive "as if newest": weight 1, confidence 1 + alpha
        # (recjobs.model.confidence with age None)
        return 1.0 + self.alpha


# Item-item parts a run may blend with ALS: (name, its weight in params.json, its file).
ITEM_PARTS = (("similarity", "blend_weight", "item_similarity_full.npz"),
              ("sequence", "sequence_weight", "item_sequence_full.npz"))


def make_bundle(run_id: str, movie_ids, item_factors, popularity, params: dict, **matrices) -> Bundle:
    """A Bundle from a fitted run; `matrices` by ITEM_PARTS name, each a scipy CSR matrix,
    (indptr, indices, data) or None. Parts with weight 0 or no matrix are left out."""
    parts = []
    for name, weight_name, _ in ITEM_PARTS:
        matrix, weight = matrices.get(name), float(params.get(weight_name, 0.0))
        if matrix is not None and weight > 0:
            if not isinstance(matrix, tuple):
                matrix = (matrix.indptr, matrix.indices, matrix.data)
            parts.append((weight, matrix))
    y = np.ascontiguousarray(item_factors, dtype=np.float32)
    return Bundle(run_id, np.asarray(movie_ids), y, y.astype(np.float64).T @ y.astype(np.float64),
                  np.asarray(popularity, dtype=np.float64), float(params["alpha"]),
                  float(params["regularization"]), tuple(parts))


# ---- input checks (shared by the CLI and the DAG) -------------------------------------

def _one_id(value) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise ConfigError(f"liked: {value!r} is not an integer movie id; expected integers, {LIKED_EXAMPLE}")
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            raise ConfigError(f"liked: empty entry in the list; expected comma-separated integers, {LIKED_EXAMPLE}")
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ConfigError(f"liked: {text!r} is not an integer movie id; expected integers, {LIKED_EXAMPLE}")
        value = int(text)
    if not isinstance(value, (int, np.integer)):
        raise ConfigError(f"liked: {value!r} is not an integer movie id; expected integers, {LIKED_EXAMPLE}")
    value = int(value)
    if not 1 <= value <= MAX_MOVIE_ID:
        raise ConfigError(f"liked: {value} is not a valid movie id; expected 1 to {MAX_MOVIE_ID}")
    return value


def parse_liked(value) -> tuple[int, ...]:
    """Liked movie ids from '296,318,593' or a list of ints / digit strings; duplicates collapse
    (first occurrence kept). Raises ConfigError for anything else."""
    if value is None:
        raise ConfigError(f"liked: no movie ids given; expected 1 to {MAX_LIKED} ids, {LIKED_EXAMPLE}")
    items = value.split(",") if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        raise ConfigError(f"liked: {value!r} is not a list of movie ids; {LIKED_EXAMPLE}") from None
    if isinstance(value, str) and value.strip() == "" or not items:
        raise ConfigError(f"liked: no movie ids given; expected 1 to {MAX_LIKED} ids, {LIKED_EXAMPLE}")
    liked = tuple(dict.fromkeys(_one_id(item) for item in items))
    if len(liked) > MAX_LIKED:
        raise ConfigError(f"liked: {len(liked)} distinct movie ids given; at most {MAX_LIKED} are accepted")
    return liked


def check_k(value) -> int:
    """k as an int from 1 to MAX_K; digit strings are accepted (the CLI passes text)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_K:
        raise ConfigError(f"k: {value!r} is out of range; expected an integer from 1 to {MAX_K}")
    return int(value)


# ---- the serving bundle of a run ------------------------------------------------------

BUNDLE_ARRAYS = ("movie_ids", "item_factors", "gram", "popularity")
CSR_ARRAYS = ("indptr", "indices", "data")


def bundle_path(run_dir: Path) -> Path:
    return Path(run_dir) / BUNDLE_NAME


def read_csr_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of a scipy.sparse.save_npz CSR file, read with numpy alone."""
    with np.load(path) as f:
        if f["format"].item() not in (b"csr", "csr"):
            raise StateError(f"{path}: expected a CSR matrix, found {f['format'].item()!r}")
        return f["indptr"], f["indices"], f["data"]


def write_bundle(run_dir: Path) -> Path:
    """Write artifacts/<run_id>/cold_start/ (one .npy per array, so requests can memory-map
    them) from model_full.npz, item_similarity_full.npz, params.json and the run's
    ratings.npz (the only time the ratings are read). Appears atomically."""
    import tempfile  # only here: it costs the requests' import time

    run_dir = Path(run_dir)
    for name in ("model_full.npz", "params.json", "ratings.npz"):
        if not (run_dir / name).is_file():
            raise StateError(f"{run_dir / name}: not found; the served run's artifacts are incomplete "
                             "(run `recjobs train` for it, or roll back)")
    params = json.loads((run_dir / "params.json").read_text(encoding="utf-8"))
    with np.load(run_dir / "model_full.npz") as f:
        movie_ids, item_factors = f["movie_ids"], f["item_factors"]
    with np.load(run_dir / "ratings.npz") as f:
        rated = f["movie_id"][f["rating"] >= params["positive_threshold"]]
    rated = rated[np.isin(rated, movie_ids)]
    popularity = np.bincount(np.searchsorted(movie_ids, rated), minlength=len(movie_ids))
    matrices = {name: read_csr_arrays(run_dir / file) for name, _, file in ITEM_PARTS
                if (run_dir / file).is_file()}
    bundle = make_bundle(run_dir.name, movie_ids, item_factors, popularity, params, **matrices)

    target = bundle_path(run_dir)
    partial = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{BUNDLE_NAME}.new."))
    arrays = dict(zip(BUNDLE_ARRAYS, (bundle.movie_ids, bundle.item_factors, bundle.gram, bundle.popularity)))
    parts = []
    for number, (weight, matrix) in enumerate(bundle.item_parts):
        arrays.update({f"part{number}_{name}": array for name, array in zip(CSR_ARRAYS, matrix)})
        parts.append(weight)
    for name, array in arrays.items():
        np.save(partial / f"{name}.npy", array)
    (partial / "params.json").write_text(json.dumps({**params, "item_part_weights": parts}, sort_keys=True))
    if target.is_dir():  # a re-trained run: move the old bundle aside (open memory maps stay valid)
        old = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{BUNDLE_NAME}.old."))
        os.rename(target, old / BUNDLE_NAME)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(partial, target)
    except OSError:  # another request wrote it in the meantime, from the same files
        shutil.rmtree(partial, ignore_errors=True)
        if not target.is_dir():
            raise
    log.info("cold start: wrote %s (%d movies)", target, len(movie_ids))
    return target


def is_stale(path: Path, run_dir: Path) -> bool:
    """True when the run was trained again after its bundle was written."""
    try:
        return (Path(run_dir) / "model_full.npz").stat().st_mtime_ns > (path / "params.json").stat().st_mtime_ns
    except FileNotFoundError:
        return True


_cache: dict[str, tuple[int, Bundle]] = {}
_cache_lock = threading.Lock()


def read_bundle(run_id: str, run_dir: Path) -> Bundle:
    """The run's bundle (written on first use), memory-mapped and cached per process."""
    path = bundle_path(run_dir)
    if not path.is_dir() or is_stale(path, run_dir):
        write_bundle(run_dir)
    stamp = (path / "params.json").stat().st_mtime_ns
    key = str(path.resolve())
    cached = _cache.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    params = json.loads((path / "params.json").read_text(encoding="utf-8"))
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in BUNDLE_ARRAYS}
    parts = tuple((float(weight), tuple(np.load(path / f"part{number}_{name}.npy", mmap_mode="r")
                                        for name in CSR_ARRAYS))
                  for number, weight in enumerate(params["item_part_weights"]))
    bundle = Bundle(run_id, arrays["movie_ids"], arrays["item_factors"], arrays["gram"], arrays["popularity"],
                    float(params["alpha"]), float(params["regularization"]), parts)
    with _cache_lock:
        if len(_cache) >= 4:
            _cache.clear()
        _cache[key] = (stamp, bundle)
    return bundle


# ---- scoring ---------------------------------------------------------------------------

def fold_in(item_factors: np.ndarray, gram: np.ndarray, rows: np.ndarray, confidence,
            regularization: float) -> np.ndarray:
    """ALS user factors for a user whose positives are `rows` with `confidence` (one value or one
    per row): x = (YᵀY + Yᵀ(Cu − I)Y + λI)⁻¹ Yᵀ Cu p(u)."""
    y = np.asarray(item_factors[rows], dtype=np.float64)
    c = np.broadcast_to(np.asarray(confidence, dtype=np.float64), (len(rows),))
    a = gram + (y.T * (c - 1.0)) @ y
    a[np.diag_indices_from(a)] += regularization
    return np.linalg.solve(a, y.T @ c)


def item_item_scores(similarity, n_items: int, rows: np.ndarray, weights) -> np.ndarray:
    """profile @ S for one user: the similarity rows of `rows`, weighted and summed."""
    indptr, indices, data = similarity
    scores = np.zeros(n_items, dtype=np.float64)
    for row, weight in zip(rows, np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(rows),))):
        start, end = indptr[row], indptr[row + 1]
        scores[indices[start:end]] += weight * data[start:end]
    return scores


def standardised(scores: np.ndarray) -> np.ndarray:
    std = scores.std()
    return (scores - scores.mean()) / (std if std > 0 else 1.0)


def method_scores(bundle: Bundle, rows: np.ndarray, confidence=None, profiles=None) -> np.ndarray:
    """The run's own method for a folded-in user, as recjobs.model.Fitted.scores: standardised
    ALS scores plus each item-item part's weight times its standardised scores. A new user's
    liked movies have confidence 1 + alpha and weight 1 in every part (they count as the
    newest); a known user's own values can be given (profiles: one (rows, weights) per part)."""
    x = fold_in(bundle.item_factors, bundle.gram, rows,
                bundle.liked_confidence if confidence is None else confidence, bundle.regularization)
    als = bundle.item_factors @ x.astype(np.float32)
    if not bundle.item_parts:
        return als
    total = standardised(als.astype(np.float64))
    for number, (weight, matrix) in enumerate(bundle.item_parts):
        part_rows, weights = (rows, 1.0) if profiles is None else profiles[number]
        total += weight * standardised(item_item_scores(matrix, len(bundle.movie_ids), part_rows, weights))
    return total


def blend(scores: np.ndarray, popularity: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * standardised score + weight * standardised log popularity."""
    return (1.0 - weight) * standardised(np.asarray(scores, dtype=np.float64)) + \
        weight * standardised(np.log1p(popularity))


def popularity_share(n_known: int, prior: float = BLEND_PRIOR) -> float:
    return prior / (prior + n_known)


def scores_for(bundle: Bundle, rows: np.ndarray, blend_max_known: int = BLEND_MAX_KNOWN,
               blend_prior: float = BLEND_PRIOR) -> tuple[str, np.ndarray]:
    """(method, a score per item) for a new user whose known liked movies are `rows`."""
    if len(rows) == 0:
        return "popularity", bundle.popularity
    als = method_scores(bundle, rows)
    if len(rows) <= blend_max_known:
        return "blend", blend(als, bundle.popularity, popularity_share(len(rows), blend_prior))
    return "als_fold_in", als


def top_k(scores: np.ndarray, exclude_rows: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best scores, best first, `exclude_rows` left out."""
    scores = np.array(scores, dtype=np.float64)
    scores[exclude_rows] = -np.inf
    k = min(k, len(scores) - len(exclude_rows))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.lexsort((best, -scores[best]))]


# ---- the job ---------------------------------------------------------------------------

def served_run_dir(settings: Settings, run_id: str, artifacts_dir: str | None) -> Path:
    """The run's artifacts folder as recorded in model_runs, else <settings.artifacts>/<run_id>."""
    if artifacts_dir and (Path(artifacts_dir) / "model_full.npz").is_file():
        return Path(artifacts_dir)
    return Path(settings.artifacts) / run_id


def cold_start(settings: Settings, liked, k: int = 10) -> ColdStartResult:
    """Recommend k movies to a new user from the movies they like, using the published run;
    the request and the answer are stored in cold_start_requests / cold_start_recommendations."""
    started = time.perf_counter()
    liked = parse_liked(liked)
    k = check_k(k)
    if not Path(settings.db).is_file():
        raise StateError(f"{settings.db}: no database; run `recjobs run` first")
    # One write transaction: the served run, its titles and the stored answer are one snapshot,
    # so a run published meanwhile is seen entirely or not at all.
    with db.transaction(settings.db) as conn:
        served = conn.execute(db.query("cold_start_job.served_run")).first()
        if served is None:
            raise StateError(f"{settings.db}: no published run to answer from; run `recjobs run` first")
        run_id, artifacts_dir = served
        bundle = read_bundle(run_id, served_run_dir(settings, run_id, artifacts_dir))
        wanted = np.fromiter(liked, dtype=np.int64, count=len(liked))
        pos = np.minimum(np.searchsorted(bundle.movie_ids, wanted), len(bundle.movie_ids) - 1)
        known = bundle.movie_ids[pos] == wanted
        rows = pos[known]
        unknown = tuple(int(i) for i in wanted[~known])
        method, scores = scores_for(bundle, rows)
        best = top_k(scores, rows, k)
        movie_ids = [int(m) for m in bundle.movie_ids[best]]
        best_scores = [round(float(s), 6) for s in scores[best]]
        titles = dict(conn.execute(db.query("cold_start_job.titles"), {"ids": json.dumps(movie_ids)}).all())
        answer_seconds = time.perf_counter() - started
        request_id = conn.execute(db.query("cold_start_job.insert_request"), {
            "requested_at": _now(), "run_id": run_id, "liked_json": json.dumps(liked),
            "unknown_json": json.dumps(unknown), "k": k, "method": method,
            "answer_seconds": round(answer_seconds, 6),
        }).scalar_one()
        if movie_ids:
            conn.exec_driver_sql(db.sql("cold_start_job.insert_recommendation"), [
                (request_id, rank, movie_id, score)
                for rank, (movie_id, score) in enumerate(zip(movie_ids, best_scores), start=1)])
    result = ColdStartResult(
        request_id=request_id, run_id=run_id, method=method, liked=liked, unknown_ids=unknown, k=k,
        recommendations=tuple((m, titles.get(m), s) for m, s in zip(movie_ids, best_scores)),
        seconds=round(time.perf_counter() - started, 6))
    log.info("cold start %d: %d liked (%d unknown) -> %d movies by %s from run %s in %.1f ms",
             request_id, len(liked), len(unknown), len(movie_ids), method, run_id, result.seconds * 1000)
    return result


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
