"""The model's orientation: users x items into fit, (ids, scores) arrays out."""

import numpy as np

from recjobs.method import model
from recjobs.settings import Settings


def checker_board(n_users: int, n_items: int):
    """implicit's get_checker_board idea: user u likes item i when u + i is even."""
    users, items = np.nonzero((np.add.outer(np.arange(n_users), np.arange(n_items)) % 2) == 0)
    return users, items


def test_checkerboard_held_out_item_comes_first():
    n_users, n_items = 30, 12  # not square: a transposed fit could not pass
    users, items = checker_board(n_users, n_items)
    held_out = (users == 0) & (items == 4)
    settings = Settings(factors=3, regularization=0.01, iterations=15, alpha=20.0)
    train = model.matrix(
        users[~held_out],
        items[~held_out],
        model.confidence(np.full((~held_out).sum(), 5.0), settings),
        (n_users, n_items),
    )
    als = model.fit(train, settings)
    assert als.user_factors.shape[0] == n_users and als.item_factors.shape[0] == n_items
    ids, scores = model.top_n(als, np.array([0, 1]), train, 3)
    assert ids.shape == (2, 3) and scores.shape == (2, 3)
    assert ids[0, 0] == 4  # the withheld even item, not an odd one
    assert not set(ids[0]) & set(train[0].indices)  # already-liked filtered
    assert all(i % 2 == 0 for i in ids[0][:1])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_similar_items_leaves_the_item_itself_out():
    users, items = checker_board(30, 12)
    settings = Settings(factors=3, iterations=10)
    als = model.fit(model.matrix(users, items, np.ones(len(users), np.float32) * 21, (30, 12)), settings)
    ids, scores = model.similar(als, 4)
    assert ids.shape == (12, 4)
    assert not (ids == np.arange(12)[:, None]).any()
    # on a checkerboard, the most similar item is of the same parity
    assert (ids[:, 0] % 2 == np.arange(12) % 2).all()


def test_same_data_same_settings_same_factors():
    users, items = checker_board(20, 8)
    settings = Settings(factors=4, iterations=5)
    m = model.matrix(users, items, np.ones(len(users), np.float32), (20, 8))
    a, b = model.fit(m, settings), model.fit(m, settings)
    assert np.array_equal(a.item_factors, b.item_factors)


def sequence_data(users, items, n_items):
    """Interactions holding only the sequence arrays sequence_similarity reads."""
    import dataclasses

    fields = {f.name: None for f in dataclasses.fields(model.Interactions)}
    fields.update(sequence_users=np.asarray(users), sequence_items=np.asarray(items), trend_days=30.0)
    return model.Interactions(**fields), n_items


def test_sequence_similarity_counts_near_ratings_of_the_same_user_only():
    # user 0 rates 0, 1, 2 in that order; user 1 rates 1, 2: window 1 pairs (0,1), (1,2), (1,2)
    data, n_items = sequence_data([0, 0, 0, 1, 1], [0, 1, 2, 1, 2], 3)
    similarity = model.sequence_similarity(data, n_items, Settings(sequence_window=1)).toarray()
    expected = np.array([[0, 1 / np.sqrt(2), 0], [1 / np.sqrt(2), 0, 1], [0, 1, 0]])
    assert np.allclose(similarity, expected)  # no pair across users (2 then 1), nothing on the diagonal


def test_sequence_similarity_in_many_blocks_equals_the_plain_count(monkeypatch):
    rng = np.random.default_rng(5)
    users = np.sort(rng.integers(0, 40, 2_000))
    items = rng.integers(0, 60, 2_000)
    data, n_items = sequence_data(users, items, 60)
    settings = Settings(sequence_window=4, item_neighbours=7)
    counts = np.zeros((60, 60))
    for offset in range(1, 5):
        for a, b, same in zip(items[:-offset], items[offset:], users[:-offset] == users[offset:], strict=True):
            if same and a != b:
                counts[a, b] += 1
                counts[b, a] += 1
    n = np.maximum(np.bincount(items, minlength=60), 1)
    plain = counts / np.sqrt(np.outer(n, n))
    for per_block in (10**9, 500):  # one block, then about 30
        monkeypatch.setattr(model, "SEQUENCE_PAIRS_PER_BLOCK", per_block)
        similarity = model.sequence_similarity(data, n_items, settings).toarray()
        for row in range(60):  # each row keeps its 7 largest (ties at the cut kept)
            cut = np.sort(plain[row])[-7]
            kept = np.where(plain[row] >= max(cut, 1e-12), plain[row], 0)
            assert np.allclose(similarity[row], kept, atol=1e-6), (per_block, row)


def test_sequence_similarity_of_too_few_ratings_is_empty():
    for users, items in (([], []), ([0], [3])):
        data, n_items = sequence_data(np.array(users, int), np.array(items, int), 5)
        similarity = model.sequence_similarity(data, n_items, Settings())
        assert similarity.shape == (5, 5) and similarity.nnz == 0


def test_a_sparse_part_standardized_through_its_nonzeros_equals_the_dense_standardized_part():
    import scipy.sparse as sp

    from recjobs.method import scoring

    rng = np.random.default_rng(7)
    dense = sp.random(50, 40, density=0.1, random_state=8, format="csr").toarray() * 3
    dense[3] = 0  # no nonzero
    dense[5] = 2.5  # every column, one value: a constant row
    dense[7] = 0
    dense[7, 11] = 4.0  # one nonzero
    part = sp.csr_matrix(dense)
    start = rng.normal(size=(50, 40))
    total = start.copy()
    scoring.add_standardized_sparse(total, 0.7, part)
    np.testing.assert_allclose(total, start + 0.7 * scoring.standardized(dense), rtol=1e-12, atol=1e-12)
    assert np.array_equal(total[3], start[3]) and np.array_equal(total[5], start[5])


def random_ratings(n_users: int, n_movies: int, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.c_[rng.integers(1, n_users + 1, n), rng.integers(1, n_movies + 1, n)], axis=0)
    return {
        "user_id": pairs[:, 0],
        "movie_id": pairs[:, 1] * 10,
        "rating": rng.choice([1.0, 2.5, 3.5, 4.0, 5.0], len(pairs)),
        "rated_at": rng.integers(1_500_000_000, 1_500_000_000 + 400 * 86_400, len(pairs)),
    }


def test_the_methods_scores_and_top_lists_equal_the_dense_blend_of_every_part():
    """Fitted.scores standardizes the sparse parts through their nonzeros; the dense blend of
    every part (scoring.blend, as the cold-start job computes it) is the definition."""
    import dataclasses

    from recjobs.method import scoring

    ratings = random_ratings(120, 90, 4000, seed=3)
    user_ids, movie_ids = np.unique(ratings["user_id"]), np.unique(ratings["movie_id"])
    settings = Settings(factors=8, iterations=3, blend_weight=0.5, sequence_weight=0.3, trend_weight=0.2)
    data = model.interactions(ratings, np.ones(len(ratings["rating"]), bool), user_ids, movie_ids, settings)
    fitted = model.fit_method(data, settings)
    rows = np.arange(len(user_ids))
    per_user_now = dataclasses.replace(data, now=np.random.default_rng(4).choice(ratings["rated_at"], len(rows)))
    for d in (data, per_user_now):
        als = np.asarray(fitted.als.user_factors[rows] @ fitted.als.item_factors.T, np.float64)
        expected = scoring.blend(
            als,
            [
                (0.5, (d.profile[rows] @ fitted.similarity).toarray()),
                (0.3, (d.recent[rows] @ fitted.sequence).toarray()),
                (0.2, d.trend_scores(rows)),
            ],
        )
        got = fitted.scores(rows, d, settings)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
        ids, top = fitted.recommend(rows, d, 10, settings)
        want_ids, want_top = scoring.top_n(expected, *d.seen[rows].nonzero(), 10)
        assert (ids == want_ids).mean() > 0.999  # ties within 1e-9 may swap, nothing else
        np.testing.assert_allclose(top, want_top, rtol=1e-9, atol=1e-9)
        # movies scored from content: their ALS score stands in for each item-item part
        content_rows = np.array([0, 5, 7])
        with_content = dataclasses.replace(fitted, content_rows=content_rows)
        expected = scoring.blend(
            als,
            [
                (0.5, (d.profile[rows] @ fitted.similarity).toarray()),
                (0.3, (d.recent[rows] @ fitted.sequence).toarray()),
            ],
            [(0.2, scoring.standardized(d.trend_scores(rows)))],
            content_rows,
        )
        got = with_content.scores(rows, d, settings)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
        assert not np.allclose(got[:, content_rows], fitted.scores(rows, d, settings)[:, content_rows])


def test_a_warm_start_takes_the_earlier_fits_rows_by_id_and_new_ids_start_small():
    previous = model.Factors(
        user_ids=np.array([1, 2, 5]),
        movie_ids=np.array([10, 20]),
        user_factors=np.arange(12, dtype=np.float32).reshape(3, 4) + 1,
        item_factors=np.arange(8, dtype=np.float32).reshape(2, 4) + 1,
    )
    users, items = model.start_from(previous, np.array([2, 3, 5]), np.array([5, 20]), Settings(factors=4))
    assert np.array_equal(users[[0, 2]], previous.user_factors[[1, 2]])  # users 2 and 5, by id
    assert np.array_equal(items[1], previous.item_factors[1])  # movie 20
    assert (0 <= users[1]).all() and (users[1] < 0.01).all() and (items[0] < 0.01).all()  # new: implicit's start
    assert model.start_from(previous, np.array([2]), np.array([20]), Settings(factors=8)) is None  # other shape


def test_als_stops_once_converged_and_a_warm_start_converges_in_fewer_iterations():
    users, items = checker_board(60, 30)
    rng = np.random.default_rng(0)
    keep = rng.random(len(users)) < 0.8
    m = model.matrix(users[keep], items[keep], np.full(keep.sum(), 21.0, np.float32), (60, 30))
    every = Settings(factors=4, iterations=25, als_tolerance=0.0)
    _, full = model.fit_until_converged(m, every)
    assert (full.iterations, full.warm) == (25, False)  # tolerance 0: every iteration
    cold_model, cold = model.fit_until_converged(m, every.replace(als_tolerance=0.03))
    assert cold.iterations < 25 and cold.change < 0.03
    start = (cold_model.user_factors, cold_model.item_factors)
    _, warm = model.fit_until_converged(m, every.replace(als_tolerance=0.03), start=start)
    assert warm.warm and warm.iterations < cold.iterations and warm.change < 0.03
