"""One fit a night: the night's only fit of the method holds out the evaluated users' test items
(and, on a usual night, a small cold-start draw); the published model is that fit with the
held-out users folded back in from their whole history. Full nights come on a cadence, and a
killed `recjobs run` is failed by the next command."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from recjobs import pipeline
from recjobs.evaluation.holdout import AFTER, TEST, NightPlan
from recjobs.jobs import load, split, train
from recjobs.method import model
from recjobs.settings import Settings
from recjobs.storage import artifacts
from support import checkerboard_settings, movielens_slice, query, require_shared_data


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory):
    """A full night and a usual night after it on 150 users of ml-latest-small, 60 of them evaluated."""
    root = tmp_path_factory.mktemp("one-fit")
    settings = Settings(
        data_dir=movielens_slice(root / "data"),
        db=root / "recs.db",
        artifacts=root / "artifacts",
        eval_users=60,
        factors=16,
        iterations=8,
        k=10,
    )
    return settings, pipeline.run(settings, "first"), pipeline.run(settings, "second")


def plan_of(settings: Settings, run_id: str) -> NightPlan:
    return NightPlan.from_arrays(artifacts.read_plan(artifacts.run_dir(settings.artifacts, run_id)))


def test_the_first_night_is_full_and_the_next_one_usual(two_nights):
    settings, first, second = two_nights
    assert first.split.full_evaluation and "first night" in first.split.full_evaluation_reason
    assert not second.split.full_evaluation and "usual night" in second.split.full_evaluation_reason
    assert first.evaluate.reference_recall_at_10 is not None  # the reference recipe: full nights only
    assert second.evaluate.reference_recall_at_10 is None
    for night in (first, second):  # every night still measures the method against both popularities
        e = night.evaluate
        assert e.n_users_evaluated == 60 and night.split.n_users_held_out == 60
        assert e.recall_at_10_ci[0] <= e.recall_at_10 <= e.recall_at_10_ci[1]
        assert e.recent_popularity_recall_at_10_ci is not None and e.popularity_recall_at_10_ci is not None
        assert night.precompute.status == "published"
    assert query(settings.db, "SELECT run_id, value FROM run_metrics WHERE metric = 'full_evaluation' ORDER BY 1") == [
        ("first", 1.0),
        ("second", 0.0),
    ]
    # every night's one fit leaves out the same 1% cold-start draw; a usual night measures cold
    # start on it, a full night on a fit of its own with a bigger draw
    assert first.split.n_cold_start_held_out == 1 and second.split.n_cold_start_held_out == 1
    assert second.cold_start.n_users_held_out == 1 and first.cold_start.n_users_held_out > 1
    assert first.train.n_folded_users == 61 and second.train.n_folded_users == 61


def test_no_evaluated_item_is_in_the_fit_that_scores_it(two_nights, monkeypatch):
    settings = two_nights[0]
    seen_by_fit = []
    real_fit = model.fit_method
    monkeypatch.setattr(model, "fit_method", lambda data, *a, **k: seen_by_fit.append(data) or real_fit(data, *a, **k))
    settings = settings.replace(artifacts=settings.artifacts.parent / "leak-check")
    load.load(settings, "third")
    split.split(settings, "third")
    train.train(settings, "third")
    assert len(seen_by_fit) == 1  # one fit a night
    directory = artifacts.run_dir(settings.artifacts, "third")
    ratings, parts, plan = (
        artifacts.read_ratings(directory),
        artifacts.read_parts(directory),
        plan_of(settings, "third"),
    )
    saved = model.Factors.read(directory / artifacts.model_file(artifacts.EVAL))
    user_ids, movie_ids = saved.user_ids, saved.movie_ids  # every catalogue movie: some are scored from content
    assert len(movie_ids) > len(np.unique(ratings["movie_id"]))

    def leaks(data: model.Interactions) -> int:
        """Evaluated users' test-and-later ratings, and cold-start users' ratings, present in the data."""
        held = (np.isin(ratings["user_id"], plan.eval_user_ids) & (parts >= TEST)) | np.isin(
            ratings["user_id"], plan.cold_start_user_ids
        )
        rows, cols = model.index(ratings["user_id"][held], user_ids), model.index(ratings["movie_id"][held], movie_ids)
        return sum(int(np.count_nonzero(m[rows, cols])) for m in (data.confidence, data.seen, data.recent))

    assert len(plan.eval_user_ids) == 60 and ((parts == AFTER) & np.isin(ratings["user_id"], plan.eval_user_ids)).any()
    assert leaks(seen_by_fit[0]) == 0
    # the check sees a leak: every rating in the data
    everything = model.interactions(ratings, np.ones(len(parts), bool), user_ids, movie_ids, settings)
    assert leaks(everything) >= 60
    # the evaluation scores that fit: the saved eval model is the one fit
    fitted, _ = model.Fitted.read(directory, artifacts.EVAL, settings)
    assert fitted.als.item_factors.shape == (len(movie_ids), settings.factors)


def test_the_published_lists_are_the_one_fit_scored_with_whole_histories(two_nights):
    settings, _, second = two_nights
    directory = artifacts.run_dir(settings.artifacts, "second")
    ratings, plan = artifacts.read_ratings(directory), plan_of(settings, "second")
    fitted, factors = model.Fitted.read(directory, artifacts.EVAL, settings)
    published, published_factors = model.Fitted.read(directory, artifacts.FULL, settings)
    user_ids, movie_ids = factors.user_ids, factors.movie_ids
    whole = model.interactions(ratings, np.ones(len(ratings["rating"]), bool), user_ids, movie_ids, settings)

    # the published factors: the fit's, the held-out users' re-solved by implicit from their whole history
    folded = model.index(plan.folded_user_ids, user_ids)
    expected = np.array(fitted.als.user_factors)
    with threadpool_limits(limits=1, user_api="blas"):
        expected[folded] = fitted.als.recalculate_user(folded, whole.confidence[folded])
    np.testing.assert_allclose(published_factors.user_factors, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(published_factors.item_factors, factors.item_factors)
    others = np.setdiff1d(np.arange(len(user_ids)), folded)
    np.testing.assert_array_equal(published_factors.user_factors[others], factors.user_factors[others])
    assert not np.allclose(published_factors.user_factors[folded], factors.user_factors[folded])
    assert (published.similarity != fitted.similarity).nnz == 0 and (published.sequence != fitted.sequence).nnz == 0

    # every user's published list: that model scored with the whole history, to 1e-6
    one_fit = model.Fitted(
        model.from_factors(expected, factors.item_factors, settings),
        fitted.similarity,
        fitted.sequence,
        content_rows=fitted.content_rows,
    )
    assert published.content_rows is not None and (published.content_rows == fitted.content_rows).all()
    top_ids, top_scores = one_fit.recommend(np.arange(len(user_ids)), whole, settings.k, settings)
    stored = query(settings.db, "SELECT user_id, rank, movie_id, score FROM recommendations WHERE run_id = 'second'")
    assert len(stored) == len(user_ids) * settings.k == second.precompute.n_recommendations
    got = {(u, r): (m, s) for u, r, m, s in stored}
    for row, user in enumerate(user_ids):
        for rank in range(settings.k):
            movie, score = got[(int(user), rank + 1)]
            assert movie == movie_ids[top_ids[row, rank]]
            assert score == pytest.approx(top_scores[row, rank], rel=1e-6, abs=1e-6)


def test_full_nights_come_on_the_cadence_when_a_setting_changes_and_when_forced(tmp_path):
    settings = checkerboard_settings(tmp_path, full_evaluation_every=3, n_similar=3)
    nights = []
    for night, changes in enumerate(
        [{}, {}, {}, {}, {}, {"factors": 8}, {"factors": 8}, {"factors": 8, "full_evaluation": True}]
    ):
        result = pipeline.run(settings.replace(**changes), f"n{night}")
        assert result.precompute.status == "published"
        nights.append((result.split.full_evaluation, result.split.full_evaluation_reason.split(":")[1].strip()))
    assert [full for full, _ in nights] == [True, False, False, True, False, True, False, True]
    assert nights[0][1].startswith("the first night")
    assert nights[3][1].startswith("night 3 since the full night n0")
    assert nights[5][1].startswith("the model settings changed since the full night n3")
    assert nights[6][1].startswith("night 1 of 3 since the full night n5")
    assert nights[7][1].startswith("forced")


def test_a_killed_recjobs_run_is_failed_by_the_next_command(tmp_path):
    settings = Settings(data_dir=require_shared_data(), db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts")
    command = [sys.executable, "-m", "recjobs", "-q", "run", "--db", str(settings.db)]
    command += ["--artifacts", str(settings.artifacts), "--data-dir", str(settings.data_dir)]
    victim = subprocess.Popen([*command, "--run-id", "killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the run has recorded the process that runs it
            if settings.db.is_file():
                try:
                    if query(settings.db, "SELECT COUNT(*) FROM run_owners WHERE run_id = 'killed'") == [(1,)]:
                        break
                except sqlite3.OperationalError:
                    pass
            assert victim.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the run never recorded its process")
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait()
    assert query(settings.db, "SELECT status FROM model_runs WHERE run_id = 'killed'") == [("running",)]
    # the next command that works on the runs: one step of another run
    done = subprocess.run([*command[:4], "load", *command[5:], "--run-id", "next"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [(status, reason)] = query(settings.db, "SELECT status, status_reason FROM model_runs WHERE run_id = 'killed'")
    assert (
        status == "failed"
        and reason == f"abandoned: the process that ran it (pid {victim.pid} on {os.uname()[1]}) is gone"
    )
    assert not (settings.artifacts / "killed").exists()
    # a run whose process is alive is never touched: this test's own process, recorded as an owner
    from recjobs.storage import db, runs

    with db.transaction(settings.db) as conn:
        runs.record_owner(conn, "next")
    assert runs.clear_gone_owners(settings, "other") == []
    assert query(settings.db, "SELECT status FROM model_runs WHERE run_id = 'next'") == [("running",)]
