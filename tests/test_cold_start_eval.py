"""The offline cold-start evaluation: held-out users, metrics, the SQL path, storage."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from recjobs.evaluation.metrics import recall_ndcg_of_items
from recjobs.jobs import cold_start_eval as ev
from recjobs.jobs import load


def test_recall_and_ndcg_of_known_lists():
    assert recall_ndcg_of_items([5, 6, 7], {5}) == (1.0, 1.0)
    recall, ndcg = recall_ndcg_of_items([1, 2, 3, 4], {2, 9})
    assert recall == 0.5
    assert ndcg == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    # 12 later positives: the ideal is 10 hits, so 10 of them found is recall 1
    assert recall_ndcg_of_items(list(range(10)), set(range(12))) == (1.0, 1.0)
    assert recall_ndcg_of_items([1, 2], set()) == (0.0, 0.0)


def test_held_out_users_are_a_seeded_fifth_of_the_users_with_enough_positives():
    users = np.repeat(np.arange(1, 101), 20)
    positive = np.tile(np.arange(20) < 15, 100)  # everyone has 15 positives
    positive[users <= 10] = False  # users 1-10 have none
    first = ev.held_out_users(users, positive, seed=42)
    assert len(first) == 18 and first.min() > 10  # 20% of the 90 eligible
    assert np.array_equal(first, ev.held_out_users(users, positive, seed=42))
    assert not np.array_equal(first, ev.held_out_users(users, positive, seed=7))


def test_the_pipeline_stores_the_figures_of_every_method_and_seed_count(published_settings):
    with sqlite3.connect(published_settings.db) as conn:
        rows = conn.execute(
            "SELECT metric, segment, value FROM run_metrics WHERE run_id = 'first' AND metric LIKE 'cold_start_%'"
        ).fetchall()
    values = {(metric, segment): value for metric, segment, value in rows}
    expected = {
        (metric, f"{method}_n{n}")
        for metric in ("cold_start_recall_at_10", "cold_start_ndcg_at_10")
        for method in ev.METHODS
        for n in ev.SEED_COUNTS
    }
    assert expected | {("cold_start_users", "all")} == set(values)
    assert values[("cold_start_users", "all")] >= 100
    assert all(0 < values[key] < 1 for key in expected)
    saved = json.loads((Path(published_settings.artifacts) / "first" / "cold_start_metrics.json").read_text())
    assert saved["sql_source"] == "sql/cold_start.sql"
    assert saved["recall_at_10"]["als_n3"] == pytest.approx(values[("cold_start_recall_at_10", "als_n3")])
    # the claim in the README: what is served (the blend) beats popularity and the plain fold-in
    for n in ev.SEED_COUNTS:
        served = values[("cold_start_recall_at_10", f"blend_n{n}")]
        assert served > values[("cold_start_recall_at_10", f"popularity_n{n}")]
        assert served > values[("cold_start_recall_at_10", f"als_n{n}")]


def test_too_few_users_measures_nothing_and_stores_nothing(tiny_settings):
    from recjobs.jobs import split, train

    for step in (load.load, split.split, train.train):
        step(tiny_settings, "tiny")
    result = ev.evaluate_cold_start(tiny_settings, "tiny")
    assert result.n_users_held_out == 0 and result.recall_at_10 == {}
    with sqlite3.connect(tiny_settings.db) as conn:
        assert conn.execute("SELECT count(*) FROM run_metrics WHERE metric LIKE 'cold_start%'").fetchone()[0] == 0
    assert (Path(tiny_settings.artifacts) / "tiny" / "cold_start" / "item_factors.npy").is_file()


def test_the_blend_prior_is_chosen_on_users_apart_from_the_reported_ones(tmp_path):
    from recjobs.settings import Settings
    from recjobs.storage.artifacts import RATING_ARRAYS
    from recjobs.storage.movielens import read_catalog
    from support import nightly_dir

    settings = Settings(data_dir=nightly_dir(tmp_path / "data"), factors=4, iterations=3)
    frame = read_catalog(settings.data_dir).ratings
    ratings = {name: frame[name].to_numpy().astype(kind) for name, kind in RATING_ARRAYS.items()}
    priors = (0.0, 5.0, 20.0, 80.0)
    choice = ev.choose_blend_prior(settings, ratings, priors=priors)

    positive = ratings["rating"] >= settings.positive_threshold
    reported = ev.held_out_users(ratings["user_id"], positive, settings.random_seed)
    assert np.array_equal(choice.reported_users, reported)  # exactly what evaluate_cold_start holds out
    assert len(choice.tuning_users) == len(reported) > 0
    assert not np.isin(choice.tuning_users, reported).any()
    assert set(choice.tuning_users) <= set(ev.eligible_users(ratings["user_id"], positive))

    assert set(choice.recall_at_10) == set(priors) and all(
        set(r) == set(ev.SEED_COUNTS) for r in choice.recall_at_10.values()
    )
    assert choice.chosen_prior in priors
    assert choice.mean_recall_at_10[choice.chosen_prior] == max(choice.mean_recall_at_10.values())
    assert choice.mean_recall_at_10[0.0] == pytest.approx(np.mean(list(choice.recall_at_10[0.0].values())), abs=1e-6)
