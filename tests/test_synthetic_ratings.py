"""models.synthetic_ratings: determinism, a sound per-user split, and ratings whose
structure is the one documented (the noise around the true scores is sigma, the true
scores explain what the biases alone do not)."""

from __future__ import annotations

import numpy as np

from models.synthetic_ratings import make_ratings


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_ratings(50, 40, 10, seed=3), make_ratings(50, 40, 10, seed=3)
    for x, y in zip(a.train + a.test, b.train + b.test):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(make_ratings(50, 40, 10, seed=4).train[2], a.train[2])


def test_split_per_user_distinct_items_and_clipped_ratings():
    data = make_ratings(300, 200, 20, test_fraction=0.2, clip=(1.0, 5.0), seed=1)
    users = np.concatenate([data.train[0], data.test[0]])
    items = np.concatenate([data.train[1], data.test[1]])
    ratings = np.concatenate([data.train[2], data.test[2]])
    assert ratings.min() >= 1.0 and ratings.max() <= 5.0
    assert np.unique(users * 200 + items).size == users.size  # no pair rated twice
    per_user = np.bincount(users, minlength=300)
    assert per_user.min() >= 10 and per_user.max() <= 30  # half to 1.5 times 20
    held = np.bincount(data.test[0], minlength=300)
    np.testing.assert_array_equal(held, np.maximum(1, np.round(0.2 * per_user)))


def test_noise_and_structure_are_as_documented():
    """Without clipping, test ratings scatter around the true scores with sigma; the
    biases alone leave the interaction's variance, rank × factor_std⁴, unexplained."""
    data = make_ratings(3000, 2000, 40, rank=4, factor_std=0.5, sigma=0.2,
                        clip=(-np.inf, np.inf), seed=2)
    ratings = data.test[2]
    assert abs(np.std(ratings - data.test_true) - 0.2) < 0.01
    interaction = np.var(data.test_true - data.test_biases)
    assert abs(interaction - 4 * 0.5 ** 4) < 0.05 * 4 * 0.5 ** 4
