"""The model's orientation: users x items into fit, (ids, scores) arrays out."""

import numpy as np

from recjobs import model
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
