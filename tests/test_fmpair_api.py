"""LocalFMPair's API against numpy scoring of its own parameters, its reported losses
against BPR in numpy, persistence without a parameter server, and the pull_sum /
push_sum ops against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from psframework import ConfigError
from models.fmpair import LocalFMPair
from models.fmpair.features import FeatureSpace
from models.synthetic import make_synthetic


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_users=120, n_items=90, n_artists=12, interactions_per_user=6, seed=4)


@pytest.fixture(scope="module")
def fitted(cluster, data):
    """Trained on the shared cluster (separate mode), with item side features."""
    model = LocalFMPair(dims=8, epochs=3, loss="bpr", sampler="crossbatch", seed=5,
                        master=cluster.address)
    return model.fit(data.train, item_features=data.item_features())


def numpy_scores(model, users):
    nu = model.space_.item_offset
    user_vec = model.space_.user[users] @ model.factors_[:nu]
    item_vec = model.space_.item @ model.factors_[nu:]
    bias = model.space_.item @ model.linear_[nu:]
    return user_vec @ item_vec.T + bias


def test_recommend_and_predict_equal_numpy_scoring(fitted, data):
    model = fitted
    users = np.array([0, 7, 119])
    ids, scores = model.recommend(users, k=5)
    full = numpy_scores(model, users)
    seen = data.train[users].toarray() > 0
    for row, u in enumerate(users):
        allowed = np.flatnonzero(~seen[row])
        best = allowed[np.argsort(-full[row, allowed], kind="stable")[:5]]
        np.testing.assert_allclose(scores[row], full[row, best], rtol=1e-5)
        assert set(ids[row]) == set(best)
        assert not seen[row, ids[row]].any()
    unfiltered, _ = model.recommend(users, k=90, filter_seen=False)
    assert all(sorted(r) == list(range(90)) for r in unfiltered)
    items = np.array([3, 1, 89])
    np.testing.assert_allclose(model.predict(users, items), full[np.arange(3), items], rtol=1e-5)


def test_recommend_for_everyone_filters_and_items_side_equal_numpy(fitted, data):
    """All users at once with filter_items, and the best users per item, against numpy
    scoring of every pair (ids exact where scores are not within rounding of a tie)."""
    model = fitted
    full = numpy_scores(model, np.arange(data.n_users)).astype(np.float64)
    banned = np.array([2, 5, 40])
    ids, scores = model.recommend(k=8, filter_items=banned)
    masked = full.copy()
    masked[data.train.nonzero()] = -np.inf
    masked[:, banned] = -np.inf
    best = np.argsort(-masked, axis=1, kind="stable")[:, :8]
    np.testing.assert_allclose(scores, np.take_along_axis(masked, best, 1), atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(masked, ids, 1), scores, atol=1e-5)
    assert not np.isin(ids, banned).any()
    items = np.array([0, 13, 89])
    users, per_item = model.recommend_users(items, k=6)
    by_item = full[:, items].T.copy()
    by_item[data.train[:, items].T.nonzero()] = -np.inf
    want = np.argsort(-by_item, axis=1, kind="stable")[:, :6]
    np.testing.assert_allclose(per_item, np.take_along_axis(by_item, want, 1), atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(by_item, users, 1), per_item, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown item id.*90"):
        model.recommend([0], filter_items=[90])


def test_callback_history_and_cleanup(cluster, client):
    """The loss each epoch reports equals BPR computed in numpy. Every user has items 0
    and 1, with features A and B; all other items share feature C, so whichever negative
    the sampler draws scores the same, and with one batch holding every positive the
    epoch's loss is that of the parameters the previous epochs left (AdaGrad, as
    docs/fmpair.md defines it), starting from the seeded initializer's."""
    n_users, n_items, dims, step, seed = 30, 20, 4, 0.1, 7
    train = np.zeros((n_users, n_items), np.float32)
    train[:, :2] = 1
    item_features = np.zeros((n_items, 3), np.float32)
    item_features[0, 0] = item_features[1, 1] = item_features[2:, 2] = 1
    a, b, c = n_users, n_users + 1, n_users + 2  # feature ids: users first, then items
    n_features = n_users + 3
    client.create_model("fm-start", "fmpair", {"n_features": n_features, "dims": dims,
                                               "seed": seed})
    v = client.pull_rows("fm-start", "factors", np.arange(n_features)).astype(np.float64)
    w = client.pull_rows("fm-start", "linear", np.arange(n_features)).astype(np.float64)
    client.destroy("fm-start")

    users, positives = np.repeat(np.arange(n_users), 2), np.tile([a, b], n_users)
    acc_v, acc_w, expected = np.ones_like(v), np.ones_like(w), []
    for _ in range(3):
        d = v[positives] - v[c]  # the positive's item vector minus the negative's
        x = (v[users] * d).sum(axis=1) + w[positives] - w[c]
        expected.append(np.logaddexp(0.0, -x).mean())  # -log σ(x)
        coef = 1 / (1 + np.exp(x))  # d log σ(x) / dx
        grad_v, grad_w = np.zeros_like(v), np.zeros_like(w)
        np.add.at(grad_v, users, coef[:, None] * d)
        np.add.at(grad_v, positives, coef[:, None] * v[users])
        grad_v[c] -= coef @ v[users]
        np.add.at(grad_w, positives, coef)
        grad_w[c] -= coef.sum()
        acc_v += grad_v ** 2
        acc_w += grad_w ** 2
        v += step * grad_v / np.sqrt(acc_v)
        w += step * grad_w / np.sqrt(acc_w)

    calls = []
    model = LocalFMPair(dims=dims, epochs=3, loss="bpr", sampler="uniform", step_size=step,
                        batch_size=2 * n_users, concurrent_batches=1, seed=seed,
                        master=cluster.address, callback=lambda *args: calls.append(args))
    model.fit(train, item_features=item_features)
    assert [call[0] for call in calls] == [0, 1, 2]
    assert all(later[1] > earlier[1] for earlier, later in zip(calls, calls[1:]))  # cumulative
    np.testing.assert_allclose([call[2] for call in calls], expected, rtol=1e-5)
    np.testing.assert_allclose([h.loss for h in model.history_], expected, rtol=1e-5)
    assert expected[0] > expected[1] > expected[2]  # so a stale or averaged loss would fail
    assert model.history_[-1].pairs == model.train_.nnz == 2 * n_users
    assert not [m for m in client.status()["models"] if m["type"] == "fmpair"]  # destroyed


def test_save_load_without_a_parameter_server(fitted, tmp_path):
    model = fitted
    model.save(tmp_path / "fm.npz")
    loaded = LocalFMPair.load(tmp_path / "fm.npz")
    assert loaded.get_params() == model.get_params()
    a, b = model.recommend(np.arange(20), k=7), loaded.recommend(np.arange(20), k=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("bad,match", [
    ({"loss": "hinge"}, "loss must be one of"), ({"dims": 0}, "dims must be"),
    ({"sampler": "popular"}, "sampler must be one of"), ({"step_size": 0}, "step_size"),
    ({"optimizer": "adam"}, "optimizer must be one of")])
def test_bad_params_are_refused_before_training(bad, match, data):
    with pytest.raises(ConfigError, match=match):
        LocalFMPair(**bad).fit(data.train)
    with pytest.raises(ConfigError, match="not fitted"):
        LocalFMPair().recommend([0])


def test_pull_sum_and_push_sum_equal_numpy(client):
    rng = np.random.default_rng(1)
    space = FeatureSpace.build(6, 5, sp.csr_matrix(rng.random((6, 4)) < 0.5),
                               sp.csr_matrix(rng.random((5, 3)) < 0.6))
    cfg = {"n_features": space.n_features, "dims": 5, "step_size": 0.2, "factors_reg": 0.1,
           "seed": 2}
    client.create_model("fm-sums", "fmpair", cfg)
    every = np.arange(space.n_features)
    v = client.pull_rows("fm-sums", "factors", every).astype(np.float64)
    client.push_rows("fm-sums", "linear", every, np.arange(space.n_features, dtype=np.float32))
    bags = space.user_bags(np.array([0, 2, 5]))
    replies = client.call("fm-sums", "pull_sum", arrays=bags)
    sums = np.concatenate([arrays[0] for _, arrays in replies], axis=1)
    dense = space.user[[0, 2, 5]].toarray()
    np.testing.assert_allclose(sums, dense @ v[:4], rtol=1e-5)
    np.testing.assert_allclose(replies[0][1][1], dense @ np.arange(4.0), rtol=1e-6)

    d = rng.normal(size=(3, 5)).astype(np.float32)
    client.call("fm-sums", "push_sum", arrays=(*bags, d), once=True)
    expected = v.copy()
    acc = np.ones_like(v)
    grad = dense.T @ d  # Σ_b x_f d[b] for each user feature f
    count = (dense != 0).sum(axis=0)
    for f in np.flatnonzero(count):
        g = grad[f] - 0.1 * count[f] * v[f]
        acc[f] += g * g
        expected[f] += 0.2 * g / np.sqrt(acc[f])
    np.testing.assert_allclose(client.pull_rows("fm-sums", "factors", every), expected, rtol=1e-5)
    client.destroy("fm-sums")


def test_context_features_steer_recommendations(cluster):
    """Users play items of every group alike; which group a positive comes from is told
    only by its context (say, the group of the item played before). Recommendations
    given a context must follow it; the user features alone cannot."""
    rng = np.random.default_rng(0)
    n_users, n_items, groups = 60, 40, 4
    group = np.arange(n_items) % groups
    dense = np.zeros((n_users, n_items), np.float32)
    for u in range(n_users):
        for g in range(groups):
            dense[u, rng.choice(np.flatnonzero(group == g), 3, replace=False)] = 1
    train = sp.csr_matrix(dense)
    context = sp.csr_matrix(np.eye(groups, dtype=np.float32)[group[train.indices]])
    model = LocalFMPair(dims=8, epochs=15, step_size=0.1, seed=3, master=cluster.address)
    model.fit(train, context_features=context)
    users = np.arange(12)
    for g in range(groups):
        here = sp.csr_matrix(np.tile(np.eye(groups, dtype=np.float32)[g], (users.size, 1)))
        ids, _ = model.recommend(users, k=5, filter_seen=False, context=here)
        assert (group[ids] == g).mean() > 0.8  # chance: 0.25
    with pytest.raises(ConfigError, match="context must be"):
        model.recommend(users, context=sp.csr_matrix((users.size, 3)))


def test_embedded_fit_with_a_secret_in_the_environment(monkeypatch, data, tmp_path):
    """PSF_SECRET reaches the embedded cluster as well as the client; save() writes the
    path it is given."""
    monkeypatch.setenv("PSF_SECRET", "env-secret")
    model = LocalFMPair(dims=4, epochs=1, num_shards=1).fit(data.train)
    assert model.history_[0].pairs == data.train.nnz
    model.save(tmp_path / "model")
    assert (tmp_path / "model").is_file()
    np.testing.assert_array_equal(LocalFMPair.load(tmp_path / "model").factors_, model.factors_)
