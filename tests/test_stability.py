"""Stability of the lists: churn@10 and RBO against the served run, and the max_churn gate."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from recjobs import pipeline
from recjobs.evaluation import stability
from recjobs.storage.publish import GateDecision, churn_gate

TEN = np.arange(1, 11)


def test_churn_and_rbo_of_known_pairs_of_lists():
    same, disjoint = np.array([TEN]), np.array([TEN + 100])
    assert stability.churn(same, same).tolist() == [0.0]
    assert stability.churn(same, disjoint).tolist() == [1.0]
    half = np.array([np.r_[TEN[:5], TEN[:5] + 100]])  # 5 of 10 shared: Jaccard 5 / 15
    assert stability.churn(same, half)[0] == pytest.approx(1 - 5 / 15)
    assert stability.rbo(same, same)[0] == pytest.approx(1.0)
    assert stability.rbo(same, disjoint)[0] == pytest.approx(0.0)
    swapped = np.array([np.r_[TEN[1], TEN[0], TEN[2:]]])  # the same set, the top two swapped
    assert stability.churn(same, swapped)[0] == 0.0 and 0.85 < stability.rbo(same, swapped)[0] < 1.0
    reversed_order = np.array([TEN[::-1]])  # same set, reversed: RBO punishes the top the most
    assert stability.rbo(same, reversed_order)[0] < stability.rbo(same, swapped)[0]


def test_compare_splits_users_with_and_without_new_ratings():
    users = np.array([1, 2, 3, 4])
    new = np.array([TEN, TEN, TEN + 100, TEN])
    served = {1: TEN, 2: TEN + 100, 3: TEN + 100}  # user 4 was not served
    found = stability.compare(users, new, served, unchanged=np.array([True, False, True, True]))
    assert (found.n_users, found.n_unchanged) == (3, 2)
    assert found.churn_at_10 == pytest.approx(1 / 3) and found.churn_at_10_unchanged == 0.0
    ratings = {"user_id": np.array([1, 1, 2]), "rated_at": np.array([5, 6, 7])}
    later = {"user_id": np.array([1, 1, 2, 2]), "rated_at": np.array([5, 6, 7, 9])}
    assert stability.unchanged_users(np.array([1, 2, 3]), later, ratings).tolist() == [True, False, False]


def test_a_warm_start_keeps_only_the_users_held_out_on_the_same_test_item():
    from recjobs.evaluation.holdout import NightPlan

    def plan(users, movies, times):
        return NightPlan(False, "", np.array(users), np.array([9]), np.array(movies), np.array(times))

    earlier = plan([1, 2, 3, 5], [10, 20, 30, 50], [100, 200, 300, 500])
    tonight = plan([1, 2, 3, 4, 6], [10, 21, 30, 40, 60], [100, 210, 301, 400, 600])
    # 1: the same test item; 2: a new one; 3: the same movie re-rated later; 4 and 6: not evaluated before
    assert tonight.same_test_item(earlier).tolist() == [True, False, False, False, False]
    older = NightPlan(False, "", np.array([1, 2]), np.array([9]))  # a plan saved before test items were kept
    assert not tonight.same_test_item(older).any()
    assert NightPlan.from_arrays(older.arrays()).eval_test_movie_ids.size == 0


def test_the_churn_gate_needs_a_quality_gain_to_let_lists_move():
    passed = GateDecision(True, "passed the quality gate (leave-last-out)")
    moved = stability.Stability(100, 80, 0.4, 0.3, 0.6, 0.7)
    current = {"run_id": "old", "recall_at_10": 0.20}
    worse, better = {"recall_at_10": 0.20}, {"recall_at_10": 0.21}
    rejected = churn_gate(passed, moved, worse, current, max_churn=0.2)
    assert not rejected.publish and rejected.reason.startswith("churn@10 0.300 of the users with no new rating")
    assert "Recall@10 0.2000; the published run old: 0.2000" in rejected.reason
    assert churn_gate(passed, moved, better, current, 0.2).publish
    assert churn_gate(passed, moved, worse, current, 0.0) == passed  # 0: off
    assert churn_gate(passed, moved, worse, current, 0.5) == passed  # under the threshold


def test_every_publish_records_its_churn_and_max_churn_rejects_moving_lists(published_copy):
    db = published_copy.db
    second = pipeline.run(published_copy, "second")
    assert second.precompute.status == "published"
    # the fit starts from the served run's: every evaluated user has the same test item
    assert second.train.warm_started and second.train.n_restarted_users == 0
    with sqlite3.connect(db) as con:
        figures = dict(
            con.execute("SELECT metric, value FROM run_metrics WHERE run_id = 'second' AND segment = 'stability'")
        )
    assert figures["n_users_compared"] == figures["n_users_unchanged"] == 610  # the same data: nobody is new
    # a rerun on unchanged data: nearly the same lists (the goal: churn@10 at most 0.05)
    assert 0 < figures["churn_at_10"] == figures["churn_at_10_unchanged"] <= 0.05
    assert 0.95 < figures["rbo_at_10"] < 1.0
    third = pipeline.run(published_copy.replace(max_churn=0.001), "third").precompute
    assert third.status == "rejected" and "above max_churn 0.001 with no quality gain" in third.reason
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT run_id FROM published_run").fetchone() == ("second",)
        reason = con.execute("SELECT status_reason FROM model_runs WHERE run_id = 'third'").fetchone()[0]
    assert reason == third.reason
