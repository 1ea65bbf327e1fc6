"""LocalMFSGD (matrix factorization by SGD, Harp-DAAL style) against a plain-numpy
reference written here in float64 from docs/mf_sgd.md: its parameters after fit under the
"rotation" schedule (1, 2 and 3 workers; 1, 2 and 3 shards; with and without biases;
with decayed steps) and under "async" with one worker and one batch in flight, all equal
sequential SGD in the order docs/mf_sgd.md defines; its history against RMSEs computed in
numpy from the fitted parameters; learning on synthetic low-rank ratings against the
noise floor; predict and recommend against numpy scoring (Surprise's rule for unknown
ids, a stable dense top-k); persistence without a parameter server; and bad parameters
refused with ConfigError before any server is started or reached."""

from __future__ import annotations

import numpy as np
import pytest

import psframework.cluster
from models.mf_sgd import LocalMFSGD
from psframework import AsyncClient, Client, ConfigError

# The implementation computes in float32, the reference in float64: after a few hundred
# updates over 2-3 epochs the two agree to float32 rounding amplified a little by SGD.
RTOL, ATOL = 1e-4, 1e-5


# -- the reference -------------------------------------------------------------------------
def epoch_sequence(users, items, n_items, *, num_workers, schedule, seed, epoch):
    """Indices of the ratings in the order sequential SGD visits them in `epoch`."""
    p = num_workers
    owners = np.empty(users.max() + 1, np.int64)  # users in contiguous blocks
    for w, ids in enumerate(np.array_split(np.arange(users.max() + 1), p)):
        owners[ids] = w
    if schedule == "async":
        assert p == 1, "async equals sequential SGD only with one worker"
        return np.random.default_rng([seed, 0, epoch]).permutation(users.size)
    block = np.empty(n_items, np.int64)  # items in contiguous blocks
    for b, ids in enumerate(np.array_split(np.arange(n_items), p)):
        block[ids] = b
    sequence = []
    for s in range(p):          # sub-epochs, and in each the workers one after another
        for w in range(p):
            b = (w + s) % p
            mine = np.flatnonzero((owners[users] == w) & (block[items] == b))  # input order
            sequence.append(mine[np.random.default_rng([seed, w, epoch, b])
                                 .permutation(mine.size)])
    return np.concatenate(sequence)


def reference(users, items, ratings, *, rank, epochs, step_size, reg=0.02, biases=True,
              schedule="rotation", num_workers=2, decay=1.0, init_std=0.1, seed=0):
    """Sequential SGD exactly as docs/mf_sgd.md defines it, in float64. Returns the parameters
    and each epoch's train RMSE, computed from the parameters that epoch left."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    ratings = np.asarray(ratings, np.float64)
    n_users, n_items = users.max() + 1, items.max() + 1
    rng = np.random.default_rng(seed)
    W = rng.normal(0, init_std, (n_users, rank)).astype(np.float32).astype(np.float64)
    H = rng.normal(0, init_std, (n_items, rank)).astype(np.float32).astype(np.float64)
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    mu = float(ratings.mean()) if biases else 0.0
    train_rmse = []
    for e in range(epochs):
        lr = step_size * decay ** e
        for t in epoch_sequence(users, items, n_items, num_workers=num_workers,
                                schedule=schedule, seed=seed, epoch=e):
            u, i, r = users[t], items[t], ratings[t]
            err = r - (mu + bu[u] + bi[i] + W[u] @ H[i])
            if biases:
                bu[u] += lr * (err - reg * bu[u])
                bi[i] += lr * (err - reg * bi[i])
            w_old = W[u].copy()
            W[u] += lr * (err * H[i] - reg * W[u])
            H[i] += lr * (err * w_old - reg * H[i])
        train_rmse.append(rmse(W, H, bu, bi, mu, users, items, ratings))
    return {"W": W, "H": H, "bu": bu, "bi": bi, "mu": mu, "train_rmse": train_rmse}


def rmse(W, H, bu, bi, mu, users, items, ratings):
    pred = mu + bu[users] + bi[items] + np.einsum("ij,ij->i", W[users], H[items])
    return float(np.sqrt(np.mean((np.asarray(ratings, np.float64) - pred) ** 2)))


def model_rmse(model, users, items, ratings):
    """RMSE from the fitted attributes, by the formula (not through predict)."""
    return rmse(model.user_factors_.astype(np.float64), model.item_factors_.astype(np.float64),
                model.user_bias_.astype(np.float64), model.item_bias_.astype(np.float64),
                float(model.global_mean_), users, items, ratings)


def assert_matches(model, ref, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(model.user_factors_, ref["W"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(model.item_factors_, ref["H"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(model.user_bias_, ref["bu"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(model.item_bias_, ref["bi"], rtol=rtol, atol=atol)
    assert model.global_mean_ == pytest.approx(ref["mu"], rel=1e-6, abs=1e-7)
    np.testing.assert_allclose([h["train_rmse"] for h in model.history_], ref["train_rmse"],
                               rtol=rtol)


def far_apart(a, b):
    """The reference is sensitive to what is tested: `a` and `b` differ by far more than
    the tolerance (so an implementation with the other order could not pass)."""
    return np.abs(a["W"] - b["W"]).max() > 100 * (ATOL + RTOL * np.abs(b["W"]).max())


# -- data ----------------------------------------------------------------------------------
def small_data(seed=3, n_users=45, n_items=30, n=360):
    """Distinct (user, item) pairs in random input order, integer ratings 1..5 (exact in
    float32), the largest ids present so that n_users and n_items are as given."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, n, replace=False)
    pairs[:2] = [n_users * n_items - 1, (n_users - 1) * n_items]  # last user, last item
    pairs = np.unique(pairs)
    rng.shuffle(pairs)
    users, items = pairs // n_items, pairs % n_items
    ratings = rng.integers(1, 6, users.size).astype(np.float64)
    return users, items, ratings


SMALL = small_data()
SMALL_FIT = {"rank": 6, "epochs": 3, "step_size": 0.05, "reg": 0.05, "seed": 11}


def fit_small(master, **kw):
    params = {**SMALL_FIT, **kw}
    model = LocalMFSGD(master=master, show_progress=False, **params)
    return model.fit(*SMALL), params


# -- equality with sequential SGD ----------------------------------------------------------
@pytest.mark.parametrize("biases", [True, False])
def test_rotation_one_worker_equals_numpy_sgd(cluster, biases):
    model, params = fit_small(cluster.address, num_workers=1, biases=biases)
    ref = reference(*SMALL, **params)
    assert model.user_factors_.shape == (45, 6) and model.item_factors_.shape == (30, 6)
    for a in (model.user_factors_, model.item_factors_, model.user_bias_, model.item_bias_):
        assert a.dtype == np.float32
    assert_matches(model, ref)
    if not biases:
        assert model.global_mean_ == 0.0
        assert not model.user_bias_.any() and not model.item_bias_.any()
    assert [h["epoch"] for h in model.history_] == [0, 1, 2]
    assert all(h["valid_rmse"] is None for h in model.history_)
    assert all(h["updates"] == SMALL[0].size for h in model.history_)
    assert all(h["seconds"] >= 0 for h in model.history_)


@pytest.mark.parametrize("workers", [2, 3])
def test_rotation_equals_sequential_sgd(cluster, workers):
    """No two workers share a user or an item within a sub-epoch, so the parallel run
    equals SGD over the sub-epochs in turn, the workers of each one after another."""
    model, params = fit_small(cluster.address, num_workers=workers)
    ref = reference(*SMALL, **params)
    assert_matches(model, ref)
    # the order matters: each worker's whole epoch order, one worker after another,
    # gives other parameters
    plain = reference(*SMALL, **{**params, "num_workers": 1})
    assert far_apart(plain, ref)


def test_async_one_worker_one_batch_equals_sequential_sgd(cluster):
    """Mini-batches of 16, one in flight: each batch sees every earlier batch's updates."""
    model, params = fit_small(cluster.address, schedule="async", num_workers=1,
                              batch_size=16, concurrent_batches=1)
    ref = reference(*SMALL, **{k: v for k, v in params.items()
                               if k not in ("batch_size", "concurrent_batches")})
    assert_matches(model, ref)
    assert all(h["updates"] == SMALL[0].size for h in model.history_)


def test_async_two_workers_trains(cluster):
    """Two workers with two batches each in flight: not deterministic, but every rating
    is visited once per epoch and the train RMSE falls."""
    model, _ = fit_small(cluster.address, schedule="async", num_workers=2, batch_size=16,
                         concurrent_batches=2)
    assert all(h["updates"] == SMALL[0].size for h in model.history_)
    losses = [h["train_rmse"] for h in model.history_]
    assert losses[0] > losses[1] > losses[2]
    assert losses[-1] == pytest.approx(model_rmse(model, *SMALL), rel=1e-4)
    for a in (model.user_factors_, model.item_factors_, model.user_bias_, model.item_bias_):
        assert np.isfinite(a).all()


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_shard_count_does_not_matter_under_rotation(cluster, fresh_cluster, shards):
    master = cluster.address if shards == 2 else fresh_cluster(shards).address
    model, params = fit_small(master, num_workers=2, epochs=2)
    assert_matches(model, reference(*SMALL, **params))


def test_decay_shrinks_the_steps(cluster):
    """Epoch e steps with step_size * decay**e."""
    model, params = fit_small(cluster.address, num_workers=2, epochs=2, step_size=0.1,
                              decay=0.3)
    ref = reference(*SMALL, **params)
    assert_matches(model, ref)
    assert far_apart(reference(*SMALL, **{**params, "decay": 1.0}), ref)


# -- learning ------------------------------------------------------------------------------
SIGMA = 0.3
LEARN = {"rank": 5, "epochs": 20, "step_size": 0.02, "reg": 0.02, "decay": 0.9, "seed": 1}


@pytest.fixture(scope="module")
def low_rank():
    """500 users × 300 items, ratings W·Hᵀ (rank 5, factors N(0, 0.5)) + N(0, 0.3) noise,
    240 items per user, 10% of the ratings held out. Dense enough that the estimation
    error of rank-5 factors is a few % of the noise (with 30 ratings per user it is
    ~25%, so no model could come within 5% of the floor); the numpy reference reaches
    1.029-1.041 × sigma over data seeds 0-7 with these parameters."""
    rng = np.random.default_rng(0)
    n_users, n_items, per_user, true_rank = 500, 300, 240, 5
    W = rng.normal(0, 0.5, (n_users, true_rank))
    H = rng.normal(0, 0.5, (n_items, true_rank))
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False)
                            for _ in range(n_users)])
    ratings = np.einsum("ij,ij->i", W[users], H[items]) + rng.normal(0, SIGMA, users.size)
    test = rng.random(users.size) < 0.1
    train = tuple(a[~test] for a in (users, items, ratings))
    held_out = tuple(a[test] for a in (users, items, ratings))
    return train, held_out


@pytest.fixture(scope="module")
def learned(cluster, low_rank):
    train, held_out = low_rank
    calls = []
    model = LocalMFSGD(master=cluster.address, show_progress=False,
                       callback=lambda *args: calls.append(args), **LEARN)
    model.fit(*train, valid=held_out)
    return model, calls


def test_learns_low_rank_ratings_to_the_noise_floor(learned, low_rank):
    model, _ = learned
    train, held_out = low_rank
    test_rmse = model_rmse(model, *held_out)
    assert test_rmse <= 1.05 * SIGMA
    # the history's last RMSEs are those of the fitted parameters
    last = model.history_[-1]
    assert last["train_rmse"] == pytest.approx(model_rmse(model, *train), rel=1e-4)
    assert last["valid_rmse"] == pytest.approx(test_rmse, rel=1e-4)
    assert len(model.history_) == LEARN["epochs"]
    assert [h["epoch"] for h in model.history_] == list(range(LEARN["epochs"]))
    assert all(h["updates"] == train[0].size for h in model.history_)
    assert model.history_[0]["train_rmse"] > 1.5 * last["train_rmse"]
    assert model.global_mean_ == pytest.approx(train[2].mean(), abs=1e-5)


def test_callback_is_called_after_every_epoch(learned):
    model, calls = learned
    assert [c[0] for c in calls] == list(range(LEARN["epochs"]))
    for (_, entry), h in zip(calls, model.history_):
        assert entry == h


# -- predict, recommend, persistence ---------------------------------------------------
@pytest.fixture(scope="module")
def fitted(cluster):
    model, _ = fit_small(cluster.address, num_workers=2)
    return model


def numpy_scores(model):
    f64 = lambda a: np.asarray(a, np.float64)
    return (float(model.global_mean_) + f64(model.user_bias_)[:, None]
            + f64(model.item_bias_)[None, :]
            + f64(model.user_factors_) @ f64(model.item_factors_).T)


def test_predict_known_and_unknown_ids(fitted):
    model = fitted
    users, items, _ = SMALL
    full = numpy_scores(model)
    got = model.predict(users, items)
    assert got.dtype == np.float64 and got.shape == users.shape
    np.testing.assert_allclose(got, full[users, items], rtol=1e-5, atol=1e-5)
    mu, bu, bi = float(model.global_mean_), model.user_bias_, model.item_bias_
    # Surprise's rule: an unknown user gets mu + b_i, an unknown item mu + b_u, both mu
    got = model.predict(np.array([45, 100, 3, 3, 45]), np.array([2, 29, 30, 77, 30]))
    want = [mu + bi[2], mu + bi[29], mu + bu[3], mu + bu[3], mu]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_predict_without_biases(cluster):
    model, _ = fit_small(cluster.address, num_workers=1, epochs=1, biases=False)
    users, items, _ = SMALL
    W, H = model.user_factors_.astype(np.float64), model.item_factors_.astype(np.float64)
    np.testing.assert_allclose(model.predict(users, items),
                               np.einsum("ij,ij->i", W[users], H[items]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict([45, 0, 50], [0, 30, 31]), [0.0, 0.0, 0.0])


def test_recommend_equals_dense_numpy_top_k(fitted):
    model = fitted
    users, items, _ = SMALL
    full = numpy_scores(model)
    masked = full.copy()
    masked[users, items] = -np.inf  # training items are left out
    ids, scores = model.recommend(k=10)  # every user
    assert ids.shape == scores.shape == (45, 10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    best = np.argsort(-masked, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(scores, np.take_along_axis(masked, best, 1), rtol=1e-5, atol=1e-5)
    # the ids are those best items, save where scores are within rounding of a tie
    np.testing.assert_allclose(np.take_along_axis(masked, ids, 1), scores, rtol=1e-5, atol=1e-5)
    assert all(np.unique(row).size == 10 for row in ids)
    assert np.isfinite(scores).all()  # no training item was needed to fill k
    some = np.array([7, 0, 44])
    sub_ids, sub_scores = model.recommend(some, k=10)
    np.testing.assert_array_equal(sub_ids, ids[some])
    np.testing.assert_allclose(sub_scores, scores[some], rtol=1e-6)
    every, every_scores = model.recommend(some, k=30, filter_seen=False)
    assert all(sorted(row) == list(range(30)) for row in every)
    np.testing.assert_allclose(every_scores, -np.sort(-full[some], axis=1), rtol=1e-5, atol=1e-5)


def test_save_load_without_a_parameter_server(fitted, tmp_path, monkeypatch):
    model = fitted
    model.save(tmp_path / "mf.npz")

    def no_server(*args, **kwargs):
        raise AssertionError("a loaded LocalMFSGD must not need a parameter server")
    monkeypatch.setattr(psframework.cluster, "start_server", no_server)
    monkeypatch.setattr(AsyncClient, "__init__", no_server)
    monkeypatch.setattr(Client, "__init__", no_server)
    loaded = LocalMFSGD.load(tmp_path / "mf.npz")
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.global_mean_ == model.global_mean_
    users, items, _ = SMALL
    probe_u, probe_i = np.append(users, [45, 3, 99]), np.append(items, [0, 30, 99])
    np.testing.assert_array_equal(loaded.predict(probe_u, probe_i), model.predict(probe_u, probe_i))
    for a, b in zip(loaded.recommend(k=7), model.recommend(k=7)):
        np.testing.assert_array_equal(a, b)

    # equal scores rank the lower item id first: items 4 and 17 made equal and best
    # (zero factors, so their scores are exactly mu + b_u + 100 for every user)
    H, bi = loaded.item_factors_.copy(), loaded.item_bias_.copy()
    H[[4, 17]] = 0
    bi[[4, 17]] = 100
    loaded.item_factors_, loaded.item_bias_ = H, bi
    ids, scores = loaded.recommend(k=3, filter_seen=False)
    np.testing.assert_array_equal(ids[:, :2], np.tile([4, 17], (45, 1)))
    np.testing.assert_array_equal(scores[:, 0], scores[:, 1])


# -- refusals ------------------------------------------------------------------------------
@pytest.fixture
def no_cluster(monkeypatch):
    """Starting or reaching a server fails with something other than ConfigError."""
    def refuse(*args, **kwargs):
        raise RuntimeError("a server was started or reached before the check")
    monkeypatch.setattr(psframework.cluster, "start_server", refuse)
    monkeypatch.setattr(AsyncClient, "__init__", refuse)
    monkeypatch.setattr(Client, "__init__", refuse)


@pytest.mark.parametrize("bad,match", [
    ({"rank": 0}, "rank"), ({"schedule": "nope"}, "schedule"),
    ({"step_size": -1}, "step_size"), ({"num_workers": 0}, "num_workers")])
@pytest.mark.parametrize("master", [None, "127.0.0.1:1"])
def test_bad_params_are_refused_before_anything_starts(no_cluster, bad, match, master):
    with pytest.raises(ConfigError, match=match):
        LocalMFSGD(master=master, show_progress=False, **bad).fit(*SMALL)


@pytest.mark.parametrize("users,items,ratings", [
    ([0, 1, 2], [0, 1], [1.0, 2.0, 3.0]),        # lengths differ
    ([0, 1, 2], [0, 1, 2], [1.0, 2.0]),
    ([0, None, 2], [0, 1, 2], [1.0, 2.0, 3.0]),  # a missing id (any other id is a label)
    ([0, 1, 2], [0, 1, 2], [1.0, np.nan, 3.0])])
def test_bad_data_is_refused_before_anything_starts(no_cluster, users, items, ratings):
    with pytest.raises(ConfigError):
        LocalMFSGD(show_progress=False).fit(np.array(users), np.array(items), np.array(ratings))


@pytest.mark.parametrize("schedule", ["rotation", "async"])
def test_divergence_is_a_clear_error_and_the_server_keeps_serving(cluster, schedule):
    """A step size far too large makes the errors overflow: fit stops with advice before
    a non-finite value is pushed, and removes its model from the server."""
    with pytest.raises(ConfigError, match="diverged.*lower the step size"):
        fit_small(cluster.address, schedule=schedule, step_size=50.0)
    with Client(cluster.address) as client:
        assert not [m for m in client.status()["models"] if m["type"] == "mf_sgd"]
    model, params = fit_small(cluster.address, num_workers=1)  # and the next fit is fine
    assert_matches(model, reference(*SMALL, **params))
