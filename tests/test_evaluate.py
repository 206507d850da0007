"""evaluate and the protocol: what the evaluation model may see, metrics, intervals, report rows."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from recjobs.evaluation import holdout, metrics
from recjobs.evaluation.holdout import AFTER, TEST
from recjobs.jobs import evaluate as ev
from recjobs.jobs import load, split, train
from recjobs.jobs.precompute import precompute
from recjobs.method import model, scoring
from recjobs.settings import Settings
from recjobs.storage import artifacts
from support import checkerboard_dir, checkerboard_settings, write_dataset


def run_until_evaluate(settings: Settings, run_id: str = "r1") -> ev.EvaluateResult:
    load.load(settings, run_id)
    split.split(settings, run_id)
    train.train(settings, run_id)
    return ev.evaluate(settings, run_id)


def test_checkerboard_held_out_item_comes_first(tmp_path):
    result = run_until_evaluate(checkerboard_settings(tmp_path))
    assert result.n_users_evaluated == 40
    assert result.recall_at_10 == 1.0 and result.ndcg_at_10 == 1.0 and result.mrr_at_10 == 1.0
    # the reference recipe now sees and filters what the method does: the held-out item too
    assert result.reference_recall_at_10 == 1.0
    assert result.popularity_ndcg_at_10 < result.ndcg_at_10


def test_many_test_users_are_evaluated_on_a_seeded_sample(tmp_path):
    settings = checkerboard_settings(tmp_path, eval_users=15)
    result = run_until_evaluate(settings)
    assert result.n_users_evaluated == 15 and result.recall_at_10 == 1.0
    test_users = np.arange(100, 140)
    chosen = holdout.users_evaluated(test_users, settings)
    assert len(set(chosen)) == 15 and list(chosen) == sorted(chosen) and set(chosen) <= set(test_users)
    assert np.array_equal(chosen, holdout.users_evaluated(test_users, settings))  # the same users for a seed
    assert not np.array_equal(chosen, holdout.users_evaluated(test_users, settings.replace(random_seed=7)))
    assert np.array_equal(holdout.users_evaluated(test_users, settings.replace(eval_users=0)), test_users)
    # keyed by user: new test users change the sample only where they take a place in it
    grown = holdout.users_evaluated(np.arange(100, 180), settings)
    assert len(set(chosen) & set(grown)) >= 5 and set(grown) - set(chosen) <= set(range(140, 180))


def read_inputs(settings, run_id):
    directory = artifacts.run_dir(settings.artifacts, run_id)
    return artifacts.read_ratings(directory), artifacts.read_parts(directory)


def test_evaluation_data_holds_nothing_from_the_test_item_on(tiny_settings):
    settings = tiny_settings
    load.load(settings, "r1")
    split.split(settings, "r1")
    ratings, parts = read_inputs(settings, "r1")
    user_ids, movie_ids = np.unique(ratings["user_id"]), np.unique(ratings["movie_id"])
    plan = holdout.NightPlan.from_arrays(artifacts.read_plan(artifacts.run_dir(settings.artifacts, "r1")))
    keep = holdout.one_fit_keep(ratings, parts, plan)  # a first night evaluates every test user here
    data = model.interactions(ratings, keep, user_ids, movie_ids, settings)
    rows = model.index(ratings["user_id"], user_ids)
    cols = model.index(ratings["movie_id"], movie_ids)
    held = (parts == TEST) | (parts == AFTER)
    assert held.sum() >= 4 and (parts == TEST).sum() == 4
    for matrix in (data.confidence, data.seen, data.recent):
        assert np.all(np.asarray(matrix[rows[held], cols[held]]).ravel() == 0)
    assert np.all(np.asarray(data.seen[rows[~held], cols[~held]]).ravel() == 1)
    before = set(zip(rows[~held], cols[~held], strict=True))
    assert set(zip(*data.sequence_users.reshape(1, -1), *data.sequence_items.reshape(1, -1), strict=True)) == before


def test_evaluation_model_is_the_model_of_the_ratings_before_each_test_item(tmp_path, tiny_settings):
    """Refit on a data set holding only the ratings before each user's test item: same factors,
    same item-item matrices. So no test item or later rating reached the evaluated model."""
    settings = tiny_settings
    run_until_evaluate(settings)
    ratings, parts = read_inputs(settings, "r1")
    saved = model.Factors.read(tmp_path / "artifacts" / "r1" / "model_eval.npz")
    keep = parts < TEST
    truncated = {name: values[keep] for name, values in ratings.items()}
    data = model.interactions(truncated, np.ones(keep.sum(), bool), saved.user_ids, saved.movie_ids, settings)
    refit = model.fit_method(data, settings)
    np.testing.assert_array_equal(refit.als.item_factors, saved.item_factors)
    np.testing.assert_array_equal(refit.als.user_factors, saved.user_factors)
    stored, _ = model.Fitted.read(tmp_path / "artifacts" / "r1", "eval", settings)
    assert (refit.similarity != stored.similarity).nnz == 0
    assert (refit.sequence != stored.sequence).nnz == 0


def test_recency_age_counts_later_ratings_of_the_same_user():
    users = np.array([0, 0, 0, 1, 1])
    rated_at = np.array([30, 10, 20, 5, 5])
    movie_ids = np.array([1, 2, 3, 9, 8])  # a tie in time is broken by movie id
    assert model.recency_age(users, rated_at, movie_ids).tolist() == [0, 2, 1, 0, 1]


def test_confidence_decays_with_age_and_a_fold_in_rating_counts_as_newest():
    settings = Settings(alpha=10.0, recency_decay=5.0, negative_weight=0.0)
    c = model.confidence(np.array([5.0, 5.0, 5.0, 2.0]), settings, np.array([0, 5, 50, 0]))
    assert c[0] == pytest.approx(11.0)
    assert c[1] == pytest.approx(1 + 10 * np.exp(-1))
    assert 1.0 < c[2] < c[1]
    assert c[3] == 0.0
    assert model.confidence(np.array([5.0]), settings)[0] == pytest.approx(11.0)
    no_recency = settings.replace(recency_decay=0.0)
    assert model.confidence(np.array([5.0]), no_recency, np.array([50]))[0] == pytest.approx(11.0)


def test_per_user_metrics_known_answers():
    top = np.array([[7, 1, 2], [1, 2, 7], [1, 2, 3]])
    got = metrics.per_user_metrics(top, np.array([7, 7, 7]))
    assert got["recall_at_10"].tolist() == [1.0, 1.0, 0.0]
    assert got["ndcg_at_10"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert got["mrr_at_10"].tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(1)
    small = (rng.random(100) < 0.1).astype(float)
    large = (rng.random(10_000) < 0.1).astype(float)
    lo_s, hi_s = metrics.bootstrap_ci(small)
    lo_l, hi_l = metrics.bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert metrics.bootstrap_ci(np.ones(50)) == (1.0, 1.0)


def test_history_segments():
    labels = ev.history_segment(np.array([1, 19, 20, 49, 50, 99, 100, 249, 250, 5000]))
    assert labels.tolist() == [
        "history:1-19",
        "history:1-19",
        "history:20-49",
        "history:20-49",
        "history:50-99",
        "history:50-99",
        "history:100-249",
        "history:100-249",
        "history:250+",
        "history:250+",
    ]


def test_top_of_leaves_seen_out_and_orders_by_score():
    import scipy.sparse as sp

    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.1, 0.0]])
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 1, 1, 0]], dtype=np.float32))
    ids, top = scoring.top_n(scores, *seen.nonzero(), 2)
    assert ids[0].tolist() == [3, 2]
    assert ids[1, 0] == 3 and top[1, 1] == scoring.FILTERED  # one unseen movie only


def test_published_run_metrics_on_movielens(published_settings):
    """The figures one `recjobs run` stores: the three models with intervals, segments, the report."""
    con = sqlite3.connect(published_settings.db)
    run_id, recall, pop = con.execute(
        "SELECT run_id, recall_at_10, popularity_recall_at_10 FROM model_runs WHERE run_id = 'first'"
    ).fetchone()
    metrics = {
        (m, s): v
        for m, s, v in con.execute("SELECT metric, segment, value FROM run_metrics WHERE run_id = ?", (run_id,))
    }
    assert metrics[("recall_at_10", "all")] == recall and metrics[("popularity_recall_at_10", "all")] == pop
    assert metrics[("n_users", "all")] == 602  # 608 test users, 6 of them the cold-start draw
    for prefix in ("", "reference_", "popularity_"):
        for metric in ("recall_at_10", "ndcg_at_10", "mrr_at_10"):
            value = metrics[(prefix + metric, "all")]
            assert (
                metrics[(prefix + metric + "_ci_low", "all")] <= value <= metrics[(prefix + metric + "_ci_high", "all")]
            )
        assert 0 < metrics[(prefix + "coverage_at_10", "all")] <= 1
    segments = {s for (m, s) in metrics if m == "n_users" and s != "all"}
    assert sum(metrics[("n_users", s)] for s in segments) == 602
    assert len(segments) >= 3
    # measured here, not typed in: the chosen method is ahead of both baselines beyond noise
    assert metrics[("recall_at_10_gain_over_reference_ci_low", "all")] > 0
    assert metrics[("recall_at_10_gain_over_popularity_ci_low", "all")] > 0
    assert metrics[("mean_popularity_at_10", "all")] < metrics[("popularity_mean_popularity_at_10", "all")]
    report = published_settings.artifacts / run_id / "report.md"
    text = report.read_text()
    assert "reference recipe" in text and f"{recall:.4f}" in text and "metrics.png" in text
    assert (published_settings.artifacts / run_id / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bootstrap_over_users_is_wider_when_a_users_values_are_alike():
    rng = np.random.default_rng(1)
    per_user = rng.random(40) < 0.3
    values = np.repeat(per_user, 10).astype(float)  # 40 users, each scored 10 times alike
    users = np.repeat(np.arange(40), 10)
    naive, grouped = metrics.bootstrap_ci(values), metrics.bootstrap_ci(values, groups=users)
    assert grouped[0] <= values.mean() <= grouped[1]
    assert grouped[1] - grouped[0] > 2 * (naive[1] - naive[0])


def test_movies_rated_below_the_threshold_are_filtered_too(tmp_path):
    """Each user rated 3 of their group's movies 1.0: ALS on positives still scores those high,
    so the held-out movie comes first only if every rated movie is filtered."""
    settings = Settings(
        data_dir=checkerboard_dir(tmp_path / "data", low_rated=3),
        db=tmp_path / "recs.db",
        artifacts=tmp_path / "artifacts",
        factors=4,
        iterations=10,
        k=5,
    )
    result = run_until_evaluate(settings)
    assert result.mrr_at_10 == 1.0
    precompute(settings, "r1")
    con = sqlite3.connect(settings.db)
    rated = con.execute(
        "SELECT count(*) FROM current_recommendations c JOIN ratings r "
        "ON r.user_id = c.user_id AND r.movie_id = c.movie_id"
    ).fetchone()
    assert rated == (0,) and con.execute("SELECT count(*) FROM current_recommendations").fetchone()[0] > 0


def test_the_popularity_baseline_does_not_count_test_items(tmp_path):
    """Users 1-30 rate movies 1-10, then movie 11 last (their test item, rated by nobody before);
    users 31-40 rate movies 12-31. Counting test items would put movie 11 first for users 1-30."""
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, 31):
        rows += [f"{user},{m},5.0,{1000 + m}" for m in range(1, 11)] + [f"{user},11,5.0,2000"]
    for user in range(31, 41):
        rows += [f"{user},{m},5.0,{1000 + m + user}" for m in range(12, 32)]
    movies = "movieId,title,genres\n" + "".join(f"{m},M{m} (2000),Drama\n" for m in range(1, 32))
    folder = write_dataset(
        tmp_path / "d",
        "\n".join(rows) + "\n",
        movies=movies,
        links="movieId,imdbId,tmdbId\n",
        tags="userId,movieId,tag,timestamp\n",
    )
    settings = Settings(
        data_dir=folder, db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts", factors=4, iterations=5, k=5
    )
    result = run_until_evaluate(settings)
    assert result.n_users_evaluated == 39  # 40, one of them the night's cold-start draw
    assert result.popularity_recall_at_10 <= 10 / 39  # users 1-30 all miss movie 11
