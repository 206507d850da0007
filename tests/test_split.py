"""split: the time-based leave-last-out split on hand-made timestamps."""

import numpy as np

from recjobs.evaluation.holdout import AFTER, BETWEEN, TEST, TRAIN, VAL, assign_parts


def test_parts_follow_time_not_file_order():
    # user 1: positives at t=10, 30, 50, 70; a negative at t=60 (between) and t=80 (after)
    user = np.array([1, 1, 1, 1, 1, 1, 2, 2, 3])
    movie = np.array([4, 1, 2, 3, 5, 6, 1, 2, 1])
    t = np.array([70, 10, 30, 50, 60, 80, 5, 6, 1])
    rating = np.array([5.0, 4.0, 4.5, 4.0, 2.0, 1.0, 4.0, 4.0, 5.0])
    parts = assign_parts(user, t, movie, rating >= 4.0)
    assert parts.tolist() == [TEST, TRAIN, TRAIN, VAL, BETWEEN, AFTER, VAL, TEST, TRAIN]


def test_ties_broken_by_movie_id():
    user = np.array([1, 1, 1])
    movie = np.array([9, 3, 5])
    t = np.array([100, 100, 100])
    parts = assign_parts(user, t, movie, np.ones(3, bool))
    assert parts.tolist() == [TEST, TRAIN, VAL]


def test_users_with_fewer_than_two_positives_are_all_train():
    user = np.array([1, 1, 1])
    parts = assign_parts(user, np.array([1, 2, 3]), np.array([1, 2, 3]), np.array([False, True, False]))
    assert parts.tolist() == [TRAIN, TRAIN, TRAIN]


def test_same_split_whatever_the_input_order():
    rng = np.random.default_rng(0)
    n = 500
    user = rng.integers(0, 20, n)
    movie = rng.permutation(n)
    t = rng.integers(0, 50, n)
    positive = rng.random(n) < 0.6
    parts = assign_parts(user, t, movie, positive)
    perm = rng.permutation(n)
    assert (assign_parts(user[perm], t[perm], movie[perm], positive[perm]) == parts[perm]).all()
    for u in np.unique(user):
        mine = user == u
        if positive[mine].sum() >= 2:
            assert (parts[mine] == TEST).sum() == 1 and (parts[mine] == VAL).sum() == 1
            test_row = np.flatnonzero(mine & (parts == TEST))[0]
            later = mine & ((t > t[test_row]) | ((t == t[test_row]) & (movie > movie[test_row])))
            assert not (positive & later).any()
