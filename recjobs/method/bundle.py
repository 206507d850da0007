"""A run's cold-start bundle: what answering a new user needs, written once per run under
artifacts/<run_id>/cold_start/ (one .npy per array), memory-mapped and cached per process.

A new user is folded into the run's model with one ALS least-squares step on its item
factors Y (implicit's `recalculate_user`, in closed form):

    x = (YᵀY + Yᵀ(Cu − I)Y + λI)⁻¹ Yᵀ Cu p(u)

where every liked movie is a positive with the confidence the model was trained with
(1 + alpha, as `recjobs.method.model.confidence` gives a newest positive). The scores are then the
run's own method (recjobs.method.scoring.blend), each liked movie weighted 1 in every item-item
part. With no liked movie known the answer is the run's popularity; with few, the method's
scores are blended toward popularity (BLEND_*; README "Cold start").

Light on purpose: numpy and the artifacts folder only, never pandas, scipy or implicit.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StateError
from ..storage import artifacts
from . import scoring

log = logging.getLogger(__name__)

# With 1 to BLEND_MAX_KNOWN liked movies known, the method's scores are blended toward
# popularity with weight BLEND_PRIOR / (BLEND_PRIOR + known): popularity counts as BLEND_PRIOR
# pseudo-movies. Chosen by tests/benchmarks/choose_cold_start_prior.py (`make
# choose-cold-start-prior`, recjobs.jobs.cold_start_eval.choose_blend_prior): the best mean
# Recall@10 over N = 1, 3, 5, 10 of priors 0-80, on ml-latest-small, measured on a tuning draw
# of held-out users disjoint from the draw evaluate_cold_start reports (was 20, chosen on that
# reported draw). Above 40 known (not measured) the plain fold-in is served.
BLEND_MAX_KNOWN = 40
BLEND_PRIOR = 40.0
# Item-item parts a run may blend with ALS: (name, its weight in params.json, its file).
ITEM_PARTS = (
    ("similarity", "blend_weight", artifacts.similarity_file(artifacts.FULL)),
    ("sequence", "sequence_weight", artifacts.sequence_file(artifacts.FULL)),
)
BUNDLE_ARRAYS = ("movie_ids", "item_factors", "gram", "popularity", "trending")
CONTENT_ROWS = "content_rows"  # only in the bundle of a run with movies scored from their content
CSR_ARRAYS = ("indptr", "indices", "data")


@dataclass(frozen=True)
class Bundle:
    """What a run needs to answer cold-start requests (arrays may be read-only memory maps)."""

    run_id: str
    movie_ids: np.ndarray  # sorted MovieLens ids, row order of item_factors
    item_factors: np.ndarray  # float32, items x factors
    gram: np.ndarray  # float64 YᵀY
    popularity: np.ndarray  # float64, positives per movie in the training ratings
    alpha: float
    regularization: float
    # the run's item-item parts, in ITEM_PARTS order: (weight, (indptr, indices, data))
    item_parts: tuple = ()
    trending: np.ndarray | None = None  # positives per movie in the run's last trend_days
    trend_weight: float = 0.0
    diversity: float = 0.0  # the run's MMR re-ranking (recjobs.method.diversity), 0: off
    # item rows scored from their content (recjobs.method.content); None: none
    content_rows: np.ndarray | None = None

    @functools.cached_property
    def standardized_trending(self) -> np.ndarray:
        """The trending part's scores, the same for every request: computed once per process."""
        return scoring.standardized(np.log1p(self.trending))

    @functools.cached_property
    def standardized_popularity(self) -> np.ndarray:
        """Log popularity, standardized: what the blend leans toward for few liked movies."""
        return scoring.standardized(np.log1p(self.popularity))

    @property
    def liked_confidence(self) -> float:
        return 1.0 + self.alpha  # a positive "as if newest": weight 1

    def rows_of(self, movie_ids) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the known ids, the unknown ids), in the order given."""
        wanted = np.asarray(movie_ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.movie_ids, wanted), len(self.movie_ids) - 1)
        known = self.movie_ids[pos] == wanted
        return pos[known], wanted[~known]


def make_bundle(
    run_id: str, movie_ids, item_factors, popularity, params: dict, trending=None, content_rows=None, **matrices
) -> Bundle:
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
    trending = np.zeros(len(movie_ids)) if trending is None else np.asarray(trending, dtype=np.float64)
    return Bundle(
        run_id,
        np.asarray(movie_ids),
        y,
        y.astype(np.float64).T @ y.astype(np.float64),
        np.asarray(popularity, dtype=np.float64),
        float(params["alpha"]),
        float(params["regularization"]),
        tuple(parts),
        trending,
        float(params.get("trend_weight", 0.0)),
        float(params.get("diversity", 0.0)),
        None if content_rows is None or not len(content_rows) else np.asarray(content_rows, np.int64),
    )


# ---- on disk --------------------------------------------------------------------------


def read_csr_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of a scipy.sparse.save_npz CSR file, read with numpy alone."""
    with np.load(path) as f:
        if f["format"].item() not in (b"csr", "csr"):
            raise StateError(f"{path}: expected a CSR matrix, found {f['format'].item()!r}")
        return f["indptr"], f["indices"], f["data"]


def item_counts(ratings: dict, keep: np.ndarray, movie_ids: np.ndarray, positive_threshold: float, trend_days: float):
    """(popularity, trending) of a bundle: positives per movie, and positives per movie in the
    trend_days before the newest rating, over the ratings where `keep` is true."""
    cols = np.searchsorted(movie_ids, ratings["movie_id"][keep])
    positive = ratings["rating"][keep] >= positive_threshold
    popularity = np.bincount(cols[positive], minlength=len(movie_ids))
    return popularity, scoring.trending_counts(ratings["rated_at"][keep], cols, positive, len(movie_ids), trend_days)


def write_bundle(run_dir: Path) -> Path:
    """Write artifacts/<run_id>/cold_start/ from the run's published model, its item-item
    matrices, params.json and its ratings (the only time they are read). Appears atomically."""
    import tempfile  # only here: it costs the requests' import time

    run_dir = Path(run_dir)
    for name in (artifacts.model_file(artifacts.FULL), artifacts.PARAMS, artifacts.RATINGS):
        if not (run_dir / name).is_file():
            raise StateError(
                f"{run_dir / name}: not found; the served run's artifacts are incomplete "
                "(run `recjobs train` for it, or roll back)"
            )
    params = artifacts.read_params(run_dir)
    with np.load(run_dir / artifacts.model_file(artifacts.FULL)) as f:
        movie_ids, item_factors = f["movie_ids"], f["item_factors"]
        content_ids = f["content_movie_ids"] if "content_movie_ids" in f.files else np.empty(0, np.int64)
    ratings = artifacts.read_ratings(run_dir)
    known = np.isin(ratings["movie_id"], movie_ids)
    popularity, trending = item_counts(
        ratings, known, movie_ids, params["positive_threshold"], float(params.get("trend_days", 30.0))
    )
    matrices = {name: read_csr_arrays(run_dir / file) for name, _, file in ITEM_PARTS if (run_dir / file).is_file()}
    bundle = make_bundle(
        run_dir.name,
        movie_ids,
        item_factors,
        popularity,
        params,
        trending,
        np.searchsorted(movie_ids, content_ids),
        **matrices,
    )

    target = run_dir / artifacts.COLD_START_BUNDLE
    partial = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{artifacts.COLD_START_BUNDLE}.new."))
    arrays = dict(
        zip(
            BUNDLE_ARRAYS,
            (bundle.movie_ids, bundle.item_factors, bundle.gram, bundle.popularity, bundle.trending),
            strict=True,
        )
    )
    if bundle.content_rows is not None:
        arrays[CONTENT_ROWS] = bundle.content_rows
    weights = []
    for number, (weight, matrix) in enumerate(bundle.item_parts):
        arrays.update({f"part{number}_{name}": array for name, array in zip(CSR_ARRAYS, matrix, strict=True)})
        weights.append(weight)
    try:
        for name, array in arrays.items():
            np.save(partial / f"{name}.npy", array)
        artifacts.write_json(partial / artifacts.PARAMS, {**params, "item_part_weights": weights})
    except OSError as e:  # a full disk, most often: leave nothing half-written behind
        shutil.rmtree(partial, ignore_errors=True)
        raise StateError(
            f"{target}: could not write the cold-start bundle ({e.strerror or e}); "
            f"expected free space for about {sum(a.nbytes for a in arrays.values()) >> 20} MB"
        ) from None
    if target.is_dir():  # a re-trained run: move the old bundle aside (open memory maps stay valid)
        old = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{artifacts.COLD_START_BUNDLE}.old."))
        os.rename(target, old / artifacts.COLD_START_BUNDLE)
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
        trained = (Path(run_dir) / artifacts.model_file(artifacts.FULL)).stat().st_mtime_ns
        return trained > (path / artifacts.PARAMS).stat().st_mtime_ns
    except FileNotFoundError:
        return True


_cache: dict[str, tuple[tuple[int, int], Bundle]] = {}
_cache_lock = threading.Lock()


def ensure_bundle(run_dir: Path) -> Path:
    """The run's bundle folder, written first if it is missing, incomplete or older than the model."""
    path = Path(run_dir) / artifacts.COLD_START_BUNDLE
    if not path.is_dir() or is_stale(path, run_dir) or not all((path / f"{n}.npy").is_file() for n in BUNDLE_ARRAYS):
        write_bundle(run_dir)
    return path


def _stamp(path: Path, run_dir: Path) -> tuple[int, int]:
    """When the bundle and the run's model were last written: a changed stamp means read again."""
    return (
        os.stat(path / artifacts.PARAMS).st_mtime_ns,
        os.stat(Path(run_dir) / artifacts.model_file(artifacts.FULL)).st_mtime_ns,
    )


def read_bundle(run_id: str, run_dir: Path) -> Bundle:
    """The run's bundle (written on first use), memory-mapped and cached per process: a cached
    bundle costs two stat calls a request."""
    path = Path(run_dir) / artifacts.COLD_START_BUNDLE
    cached = _cache.get(str(path))
    if cached:
        with contextlib.suppress(OSError):
            if _stamp(path, run_dir) == cached[0]:
                return cached[1]
    ensure_bundle(run_dir)
    try:
        params, arrays, parts = _map_bundle(path)
    except (OSError, ValueError, KeyError):  # damaged or truncated: written again from the run's files
        log.warning("cold start: %s is damaged; writing it again", path)
        write_bundle(run_dir)
        params, arrays, parts = _map_bundle(path)
    stamp = _stamp(path, run_dir)
    bundle = Bundle(
        run_id,
        arrays["movie_ids"],
        arrays["item_factors"],
        arrays["gram"],
        arrays["popularity"],
        float(params["alpha"]),
        float(params["regularization"]),
        parts,
        arrays["trending"],
        float(params.get("trend_weight", 0.0)),
        float(params.get("diversity", 0.0)),
        arrays.get(CONTENT_ROWS),
    )
    with _cache_lock:
        if len(_cache) >= 4:
            _cache.clear()
        _cache[str(path)] = (stamp, bundle)
    return bundle


def _mapped(path: Path) -> np.ndarray:
    """A read-only memory map of a .npy file, as a plain ndarray view (numpy's memmap class
    costs Python code on every slice; the view keeps the map open)."""
    return np.load(path, mmap_mode="r").view(np.ndarray)


def _map_bundle(path: Path):
    """(params, arrays, item parts) of a bundle folder, memory-mapped; raises if any is damaged."""
    params = artifacts.read_json(path / artifacts.PARAMS)
    arrays = {name: _mapped(path / f"{name}.npy") for name in BUNDLE_ARRAYS}
    if (path / f"{CONTENT_ROWS}.npy").is_file():  # a run with movies scored from their content
        arrays[CONTENT_ROWS] = _mapped(path / f"{CONTENT_ROWS}.npy")
    parts = tuple(
        (float(weight), tuple(_mapped(path / f"part{number}_{name}.npy") for name in CSR_ARRAYS))
        for number, weight in enumerate(params["item_part_weights"])
    )
    return params, arrays, parts


# ---- scoring a new user ---------------------------------------------------------------


def fold_in_system(
    item_factors: np.ndarray, gram: np.ndarray, rows: np.ndarray, confidence, regularization: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, Y_u, c) of one user's least-squares step: A = YᵀY + Yᵀ(Cu − I)Y + λI over the user's
    positives `rows` with `confidence` (one value or one per row); x = A⁻¹ Y_uᵀ c."""
    y = np.asarray(item_factors[rows], dtype=np.float64)
    c = np.broadcast_to(np.asarray(confidence, dtype=np.float64), (len(rows),))
    a = gram + (y.T * (c - 1.0)) @ y
    a[np.diag_indices_from(a)] += regularization
    return a, y, c


def fold_in(
    item_factors: np.ndarray, gram: np.ndarray, rows: np.ndarray, confidence, regularization: float
) -> np.ndarray:
    """ALS user factors for a user whose positives are `rows` with `confidence` (one value or one
    per row): x = (YᵀY + Yᵀ(Cu − I)Y + λI)⁻¹ Yᵀ Cu p(u)."""
    a, y, c = fold_in_system(item_factors, gram, rows, confidence, regularization)
    return np.linalg.solve(a, y.T @ c)


def method_scores(bundle: Bundle, rows: np.ndarray, confidence=None, profiles=None) -> np.ndarray:
    """The run's method (recjobs.method.scoring.blend) for a folded-in user. A new user's liked movies
    have confidence 1 + alpha and weight 1 in every part; a known user's own values can be
    given (profiles: one (rows, weights) per item-item part)."""
    x = fold_in(
        bundle.item_factors,
        bundle.gram,
        rows,
        bundle.liked_confidence if confidence is None else confidence,
        bundle.regularization,
    )
    als = bundle.item_factors @ x.astype(np.float32)
    parts = []
    for number, (weight, matrix) in enumerate(bundle.item_parts):
        part_rows, weights = (rows, 1.0) if profiles is None else profiles[number]
        parts.append((weight, scoring.csr_rows_sum(matrix, len(bundle.movie_ids), part_rows, weights)))
    return scoring.blend(als, parts, [(bundle.trend_weight, bundle.standardized_trending)], bundle.content_rows)


def popularity_share(n_known: int, prior: float = BLEND_PRIOR) -> float:
    return prior / (prior + n_known)


def scores_for(
    bundle: Bundle, rows: np.ndarray, blend_max_known: int = BLEND_MAX_KNOWN, blend_prior: float = BLEND_PRIOR
) -> tuple[str, np.ndarray]:
    """(method, a score per movie) for a new user whose known liked movies are `rows`."""
    if len(rows) == 0:
        return "popularity", bundle.popularity
    method = method_scores(bundle, rows)
    if len(rows) > blend_max_known:
        return "als_fold_in", method
    share = popularity_share(len(rows), blend_prior)
    return "blend", (1.0 - share) * scoring.standardized(method) + share * bundle.standardized_popularity
