"""Diversity: MMR re-ranking of top lists, intra-list diversity and genre coverage."""

import numpy as np
import pytest

from recjobs.errors import ConfigError
from recjobs.method import diversity
from recjobs.storage.artifacts import FILTERED, is_filtered

# item rows 0 and 1 point the same way (near-duplicates); 2 and 3 each another way
VECTORS = np.array([[1.0, 0.0, 0.0], [0.99, 0.01, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def random_lists(n_users=20, n_items=50, c=12, seed=0):
    rng = np.random.default_rng(seed)
    items = np.array([rng.choice(n_items, c, replace=False) for _ in range(n_users)])
    scores = -np.sort(-rng.normal(size=(n_users, c)), axis=1)
    return items, scores, rng.normal(size=(n_items, 8))


def test_diversity_zero_returns_the_first_k_candidates_and_their_scores():
    items, scores, vectors = random_lists()
    top, top_scores = diversity.rerank(items, scores, vectors, 0.0, 5)
    assert np.array_equal(top, items[:, :5]) and np.array_equal(top_scores, scores[:, :5])


def test_full_diversity_moves_the_near_duplicate_down():
    items = np.array([[0, 1, 2, 3]])
    scores = np.array([[4.0, 3.9, 1.0, 0.5]])
    top, top_scores = diversity.rerank(items, scores, VECTORS, 1.0, 3)
    assert top[0, 0] == 0  # the best candidate first, whatever the setting
    assert 1 not in top[0]  # its near-duplicate gives way to two different movies
    assert set(top[0]) == {0, 2, 3}
    assert np.array_equal(top_scores[0], scores[0, [list(items[0]).index(i) for i in top[0]]])  # their own scores
    kept, _ = diversity.rerank(items, scores, VECTORS, 0.0, 3)
    assert list(kept[0]) == [0, 1, 2]


def test_a_small_setting_keeps_a_much_better_duplicate():
    items = np.array([[0, 1, 2, 3]])
    scores = np.array([[10.0, 9.9, 0.0, -1.0]])
    top, _ = diversity.rerank(items, scores, VECTORS, 0.1, 2)
    assert list(top[0]) == [0, 1]


def test_rerank_picks_only_candidates_each_once():
    items, scores, vectors = random_lists(seed=3)
    for setting in (0.1, 0.3, 0.5, 1.0):
        top, top_scores = diversity.rerank(items, scores, vectors, setting, 6)
        for user in range(len(items)):
            assert set(top[user]) <= set(items[user]) and len(set(top[user])) == 6
            lookup = dict(zip(items[user], scores[user], strict=True))
            assert np.allclose(top_scores[user], [lookup[i] for i in top[user]])


def test_padding_stays_at_the_end():
    items = np.array([[3, 0, -1, -1], [2, 1, 0, 3]])
    scores = np.array([[2.0, 1.0, FILTERED, FILTERED], [4.0, 3.0, 2.0, 1.0]])
    for setting in (0.0, 0.5, 1.0):
        top, top_scores = diversity.rerank(items, scores, VECTORS, setting, 3)
        assert set(top[0, :2]) == {3, 0} and top[0, 2] == -1 and is_filtered(top_scores[0, 2])
        assert (top[1] >= 0).all() and not is_filtered(top_scores[1]).any()
    top, top_scores = diversity.rerank(items, scores, VECTORS, 0.5, 6)  # k above the candidates
    assert top.shape == (2, 6) and (top[:, 4:] == -1).all() and is_filtered(top_scores[:, 4:]).all()


def test_filtered_scores_count_as_padding():
    items = np.array([[1, 2, 0]])  # a real item row scored FILTERED is never picked before others
    scores = np.array([[1.0, 0.5, FILTERED]])
    top, top_scores = diversity.rerank(items, scores, VECTORS, 1.0, 3)
    assert list(top[0, :2]) == [1, 2] and top[0, 2] == -1 and is_filtered(top_scores[0, 2])


def test_diversity_outside_zero_one_is_refused():
    with pytest.raises(ConfigError, match="outside 0-1"):
        diversity.rerank(np.zeros((1, 2), int), np.zeros((1, 2)), VECTORS, 1.5, 2)


def test_intra_list_diversity_of_hand_made_lists():
    lists = np.array([[0, 2, 3], [0, 1, -1], [2, -1, -1]])
    per_list = diversity.list_diversity(lists, VECTORS)
    assert per_list[0] == pytest.approx(1.0)  # three orthogonal movies
    cos01 = 0.99 / np.hypot(0.99, 0.01)
    assert per_list[1] == pytest.approx(1.0 - cos01)  # padding left out
    assert np.isnan(per_list[2])  # one movie: no pairs
    assert diversity.intra_list_diversity(lists, VECTORS) == pytest.approx((1.0 + 1.0 - cos01) / 2)


def test_genre_coverage_of_hand_made_lists():
    genres = diversity.genre_sets(["Action|Comedy", "Action", "Drama|Romance|Comedy", "(no genres listed)"])
    assert genres == [{"Action", "Comedy"}, {"Action"}, {"Drama", "Romance", "Comedy"}, set()]
    lists = np.array([[0, 1, -1], [0, 2, 3], [3, -1, -1]])
    assert list(diversity.list_genres(lists, genres)) == [2.0, 4.0, 0.0]
    assert diversity.genre_coverage(lists, genres) == pytest.approx(2.0)


def test_a_night_with_diversity_stores_re_ranked_lists_and_cold_start_follows(tmp_path, published_settings):
    import sqlite3

    from recjobs import pipeline
    from recjobs.jobs import cold_start as cs

    plain = published_settings  # diversity 0
    diverse = published_settings.replace(db=tmp_path / "recs.db", artifacts=tmp_path / "artifacts", diversity=0.5)
    assert pipeline.run(diverse, "diverse").precompute.status == "published"

    def lists(db, k):
        with sqlite3.connect(db) as con:
            found = {}
            for user, movie in con.execute(
                "SELECT user_id, movie_id FROM current_recommendations WHERE rank <= ? ORDER BY user_id, rank", (k,)
            ):
                found.setdefault(user, []).append(movie)
        return found

    before, after = lists(plain.db, 50), lists(diverse.db, 10)
    assert before.keys() == after.keys()
    assert sum(after[u] != before[u][:10] for u in after) > len(after) / 2  # most first pages change
    assert all(len(after[u]) == 10 for u in after)
    # the cold-start job re-ranks with the run's own setting (its bundle's params)
    from recjobs.method import bundle

    (run_dir,) = [p for p in (tmp_path / "artifacts").iterdir() if p.name == "diverse"]
    assert bundle.read_bundle("diverse", run_dir).diversity == 0.5
    answer = cs.cold_start(diverse, [296, 318, 593], k=10)
    scores = [r.score for r in answer.recommendations]
    assert len(scores) == 10 and scores != sorted(scores, reverse=True)  # re-ranked: not by score alone
