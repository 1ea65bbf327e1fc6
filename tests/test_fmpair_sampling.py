"""Negative samplers and acceptance rules against brute force."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.fmpair.sampling import NegativeSampler


def _data(seed=0):
    rng = np.random.default_rng(seed)
    train = sp.csr_matrix((rng.random((30, 40)) < 0.15).astype(np.float32))
    return rng, train, rng.integers(0, 6, 40)


def test_rejected_equals_brute_force_and_leaves_the_input_alone():
    rng, train, attribute = _data()
    before = (train.indptr.copy(), train.indices.copy(), train.data.copy())
    sampler = NegativeSampler(train, attribute=attribute)
    for a, b in zip(before, (train.indptr, train.indices, train.data)):
        np.testing.assert_array_equal(a, b)
    dense = train.toarray() > 0
    users, items = rng.integers(0, 30, 500), rng.integers(0, 40, 500)
    expected = [dense[u, j] or attribute[j] in set(attribute[dense[u]])
                for u, j in zip(users, items)]
    np.testing.assert_array_equal(sampler.rejected(users, items), expected)
    only_seen = NegativeSampler(train, filter_seen=True)
    np.testing.assert_array_equal(only_seen.rejected(users, items), dense[users, items])
    assert not NegativeSampler(train, filter_seen=False).rejected(users, items).any()


def test_sample_marks_what_it_could_not_replace():
    rng, train, attribute = _data(1)
    sampler = NegativeSampler(train, attribute=attribute, max_tries=3)
    users = rng.integers(0, 30, 200)
    negatives, accepted = sampler.sample(rng, users, 4)
    assert negatives.shape == accepted.shape == (200, 4)
    np.testing.assert_array_equal(accepted, ~sampler.rejected(users[:, None], negatives))
    assert accepted.mean() > 0.5  # resampling found acceptable items for most


def test_exp_sampler_prefers_popular_items():
    rng, train, _ = _data(2)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    top = np.argsort(-popularity, kind="stable")[:4]
    draws = NegativeSampler(train, "exp", rho=0.1, filter_seen=False).draw(rng, 20_000)
    uniform = NegativeSampler(train, "uniform").draw(rng, 20_000)
    assert np.isin(draws, top).mean() > 3 * np.isin(uniform, top).mean()
