"""score_shard: the top-k movies of one range of users of the published model, written as a
staging file (artifacts/<run_id>/shards/) that precompute publishes with every other shard in
one transaction (recjobs.method.shards: the cut, the files and the scorer)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..method.shards import Scorer, bounds, check_shard, shard_file
from ..settings import Settings
from ..storage import artifacts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardResult:
    run_id: str
    shard: int
    n_shards: int
    first_user_row: int
    n_users: int
    path: str
    seconds: float


def score_shard(settings: Settings, run_id: str, shard: int = 0) -> ShardResult:
    """Score one of settings.score_shards user ranges with the run's published model and write
    its staging file (replacing an earlier try's, so a retry never adds rows)."""
    started = time.perf_counter()
    check_shard(shard, settings.score_shards)
    scorer = Scorer(settings, run_id)
    lo, hi = bounds(scorer.n_users, scorer.n_items, settings.score_shards)[shard : shard + 2]
    scored = scorer.score(int(lo), int(hi))
    path = shard_file(scorer.directory, shard, settings.score_shards)
    path.parent.mkdir(exist_ok=True)
    stamp = scorer.stamp()
    artifacts.write_atomically(
        path,
        lambda temp: np.savez(
            temp,
            first_row=lo,
            top_items=scored.top_items,
            top_scores=scored.top_scores,
            because=scored.because,
            stamp=np.array(stamp),
        ),
    )
    seconds = time.perf_counter() - started
    n_shards = settings.score_shards
    log.info("score_shard %s: shard %d of %d, users %d-%d, %.1fs", run_id, shard + 1, n_shards, lo, hi, seconds)
    return ShardResult(run_id, shard, settings.score_shards, int(lo), int(hi - lo), str(path), round(seconds, 3))
