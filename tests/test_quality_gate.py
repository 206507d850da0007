"""The quality gate: a run is published only if it beats popularity and is not much worse
than the published run; a rejected run leaves what readers see exactly as it was."""

from __future__ import annotations

import sqlite3

from recjobs.jobs import evaluate, load, precompute, split, train
from recjobs.storage import publish


def run_record(run_id="new", recall=0.15, popularity=0.04):
    return {"run_id": run_id, "recall_at_10": recall, "popularity_recall_at_10": popularity}


def test_gate_needs_an_evaluated_run():
    decision = publish.gate(run_record(recall=None), None, 0.1)
    assert not decision.publish and "not evaluated" in decision.reason


def test_gate_rejects_a_run_that_does_not_beat_its_popularity_baseline():
    decision = publish.gate(run_record(recall=0.04, popularity=0.04), None, 0.1)
    assert not decision.publish and "popularity" in decision.reason


def test_gate_tolerance_is_relative_to_the_published_run():
    current = run_record("old", recall=0.20)
    assert publish.gate(run_record(recall=0.181), current, 0.10).publish
    rejected = publish.gate(run_record(recall=0.179), current, 0.10)
    assert not rejected.publish and "old" in rejected.reason and "10%" in rejected.reason
    assert publish.gate(run_record(recall=0.179), current, 0.15).publish
    # re-gating the published run itself compares it with nothing
    assert publish.gate(run_record("old", recall=0.179), current, 0.0).publish


def temporal_record(run_id="new", recall=0.15, popularity=0.04, temporal=0.30, temporal_popularity=0.12):
    return {
        **run_record(run_id, recall, popularity),
        "gate_protocol": "temporal",
        "temporal_recall_at_10": temporal,
        "temporal_popularity_recall_at_10": temporal_popularity,
    }


def test_a_temporal_gate_judges_the_windows_figures_not_leave_last_out():
    """A full night whose blend was chosen on its windows is gated on them: a leave-last-out
    figure far below the published run's (trending penalised there) does not reject it; a
    temporal figure that does not beat popularity on the windows does."""
    current = run_record("old", recall=0.20)
    passed = publish.gate(temporal_record(recall=0.10), current, 0.10)
    assert passed.publish and "temporal protocol" in passed.reason and "no temporal Recall@10" in passed.reason
    assert not publish.gate({**temporal_record(recall=0.10), "gate_protocol": "leave-last-out"}, current, 0.1).publish
    flat = publish.gate(temporal_record(temporal=0.12, temporal_popularity=0.12), None, 0.10)
    assert not flat.publish and flat.reason.startswith("temporal Recall@10 0.1200 does not beat")
    # against a published run gated on its own windows: the tolerance applies to those figures
    published = temporal_record("old", temporal=0.40)
    assert not publish.gate(temporal_record(temporal=0.35), published, 0.10).publish
    assert publish.gate(temporal_record(temporal=0.37), published, 0.10).publish


def rows(db, sql):
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def test_rejected_run_leaves_the_published_recommendations(published_copy):
    """A weaker method (plain ALS, no recency or blends) on the same data falls more than 10%
    below the published run: it is rejected with its reason and nothing readers see changes."""
    db = published_copy.db
    before = rows(db, "SELECT * FROM current_recommendations ORDER BY user_id, rank")
    before_similar = rows(db, "SELECT * FROM current_similar_movies ORDER BY movie_id, rank")
    weaker = published_copy.replace(recency_decay=0.0, blend_weight=0.0, sequence_weight=0.0)
    for step in (load.load, split.split, train.train, evaluate.evaluate):
        step(weaker, "weaker")
    result = precompute.precompute(weaker, "weaker")

    assert result.status == "rejected"
    status, reason, recall = rows(
        db, "SELECT status, status_reason, recall_at_10 FROM model_runs WHERE run_id = 'weaker'"
    )[0]
    published_recall = rows(db, "SELECT recall_at_10 FROM model_runs WHERE run_id = 'first'")[0][0]
    assert recall < published_recall * 0.9  # measured: the rejection is for the stated reason
    assert status == "rejected" and "below the published run first" in reason
    assert rows(db, "SELECT run_id FROM published_run") == [("first",)]
    assert rows(db, "SELECT * FROM current_recommendations ORDER BY user_id, rank") == before
    assert rows(db, "SELECT * FROM current_similar_movies ORDER BY movie_id, rank") == before_similar
    assert rows(db, "SELECT count(*) FROM recommendations WHERE run_id = 'weaker'") == [(0,)]
