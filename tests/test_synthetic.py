"""models.synthetic: determinism, a sound split, power-law popularity, learnable clusters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from models.metrics import auc, precision_at_k
from models.synthetic import SyntheticData, make_synthetic, popularity_scores

SMALL = dict(n_users=400, n_items=600, n_clusters=6, n_artists=60)


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return make_synthetic(**SMALL, seed=7)


def same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0


def top_decile_share(interactions: sp.csr_matrix) -> float:
    counts = np.sort(np.asarray(interactions.sum(axis=0)).ravel())[::-1]
    return counts[: len(counts) // 10].sum() / counts.sum()


def test_same_seed_same_data_other_seed_other_data(data):
    again = make_synthetic(**SMALL, seed=7)
    for name in ("interactions", "train", "test"):
        assert same(getattr(data, name), getattr(again, name))
    for name in ("user_cluster", "item_cluster", "item_artist"):
        np.testing.assert_array_equal(getattr(data, name), getattr(again, name))
    other = make_synthetic(**SMALL, seed=8)
    assert not same(data.interactions, other.interactions)
    assert not same(data.test, other.test)


def test_shapes_and_dtypes(data):
    for matrix in (data.interactions, data.train, data.test):
        assert isinstance(matrix, sp.csr_matrix)
        assert matrix.shape == (400, 600) and matrix.dtype == np.float32
        assert matrix.has_canonical_format
        np.testing.assert_array_equal(matrix.data, 1.0)
    assert (data.n_users, data.n_items, data.n_artists) == (400, 600, 60)
    for array, size, bound in ((data.user_cluster, 400, 6), (data.item_cluster, 600, 6),
                               (data.item_artist, 600, 60)):
        assert array.dtype == np.int64 and array.shape == (size,)
        assert array.min() >= 0 and array.max() < bound
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.train = data.test


def test_split_is_disjoint_covers_everything_and_keeps_a_train_item(data):
    assert data.train.multiply(data.test).nnz == 0
    assert same(data.train + data.test, data.interactions)
    per_user = np.diff(data.interactions.indptr)
    assert (np.diff(data.train.indptr) >= 1).all()
    held_out = np.diff(data.test.indptr)
    np.testing.assert_array_equal(
        held_out, np.minimum(np.floor(per_user * 0.2 + 0.5), per_user - 1))
    assert per_user.mean() == pytest.approx(20, rel=0.1)


def test_a_user_with_one_item_keeps_it_for_training():
    one = make_synthetic(n_users=50, n_items=30, n_clusters=2, n_artists=2,
                         interactions_per_user=1, test_fraction=1.0, seed=1)
    np.testing.assert_array_equal(np.diff(one.interactions.indptr), 1)
    assert one.test.nnz == 0 and same(one.train, one.interactions)


def test_popularity_is_a_power_law_against_a_uniform_generator(data):
    uniform = make_synthetic(**SMALL, popularity_exponent=0.0, seed=7)
    zipf, flat = top_decile_share(data.interactions), top_decile_share(uniform.interactions)
    assert zipf > 2 * flat


def test_without_noise_users_stay_in_their_cluster():
    clean = make_synthetic(**SMALL, noise=0.0, seed=3)
    users, items = clean.interactions.nonzero()
    np.testing.assert_array_equal(clean.item_cluster[items], clean.user_cluster[users])
    noisy = make_synthetic(**SMALL, noise=0.5, seed=3)
    users, items = noisy.interactions.nonzero()
    outside = np.mean(noisy.item_cluster[items] != noisy.user_cluster[users])
    assert 0.3 < outside < 0.6


def test_artist_purity_controls_how_much_the_artist_tells_of_the_cluster():
    def agreement(purity):
        d = make_synthetic(**SMALL, artist_purity=purity, seed=5)
        return np.mean(d.item_artist % 6 == d.item_cluster)  # artist a is in cluster a % 6
    assert agreement(1.0) == 1.0
    assert agreement(0.0) < 0.35


def test_side_features(data):
    features = data.item_features()
    assert isinstance(features, sp.csr_matrix) and features.shape == (600, 660)
    np.testing.assert_array_equal(np.diff(features.indptr), 2)
    np.testing.assert_array_equal(features[:, :600].toarray(), np.eye(600))
    np.testing.assert_array_equal(features[:, 600:].nonzero()[1], data.item_artist)
    assert same(data.item_features(artist=False), sp.identity(600, format="csr"))
    assert data.item_features(identity=False).shape == (600, 60)
    with pytest.raises(ValueError, match="at least one"):
        data.item_features(identity=False, artist=False)
    users = data.user_features()
    assert users.shape == (400, 400) and same(users, sp.identity(400, format="csr"))


def test_popularity_scores_are_training_counts_for_everyone(data):
    score = popularity_scores(data.train)
    block = score(np.array([0, 5, 9]))
    counts = np.asarray(data.train.sum(axis=0)).ravel()
    assert block.shape == (3, 600)
    np.testing.assert_array_equal(block, np.tile(counts, (3, 1)))
    # Popularity is a real baseline: better than chance.
    assert auc(score, data.test, train=data.train) > 0.6


def test_clusters_are_learnable_an_oracle_beats_popularity(data):
    counts = np.asarray(data.train.sum(axis=0)).ravel()

    def oracle(users):
        # The generator's own clusters: same-cluster items first, by popularity.
        own = data.item_cluster[None, :] == data.user_cluster[users][:, None]
        return own * (counts.max() + 1) + counts

    popular = precision_at_k(popularity_scores(data.train), data.test, 10, train=data.train)
    informed = precision_at_k(oracle, data.test, 10, train=data.train)
    assert informed > 2 * popular
    assert informed - popular > 0.05


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="n_artists"):
        make_synthetic(n_clusters=10, n_artists=5)
    with pytest.raises(ValueError, match="noise"):
        make_synthetic(noise=1.5)
