"""The recommenders' local API in the caller's ids (models/ids.py, models/recommender.py):
inputs of every form, unknown ids, sample weights, threshold, fit_partial, similar_*,
scikit-learn's params. Real embedded clusters, small data; references are numpy written
here or runs whose answer is known."""

from __future__ import annotations

import inspect
import typing

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from psframework import ConfigError
from models.fmpair import LocalFMPair
from models.ids import UnknownIdError, interactions
from models.lda import LocalLDA
from models.mf_sgd import LocalMFSGD
from models.pa import LocalPA
from models.rsvd import LocalPureSVD, LocalRandomizedSVD

N_USERS, N_ITEMS = 12, 9


def pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every user with 3 distinct items, every user and item present."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(N_USERS), 3)
    items = np.concatenate([rng.choice(N_ITEMS, 3, replace=False) for _ in range(N_USERS)])
    items[:N_ITEMS] = np.arange(N_ITEMS)  # every item occurs (users 0-2's rows)
    keep = ~pd.DataFrame({"u": users, "i": items}).duplicated().to_numpy()
    return users[keep], items[keep]


def fmpair(**params) -> LocalFMPair:
    base = dict(dims=4, epochs=3, batch_size=8, concurrent_batches=1, seed=3,
                show_progress=False, num_shards=1)
    return LocalFMPair(**{**base, **params})


def named(ids: np.ndarray, prefix: str) -> np.ndarray:
    """String ids whose sorted order is the integers' order."""
    return np.array([f"{prefix}{i:03d}" for i in ids], dtype=object)


# -- inputs ----------------------------------------------------------------------------------
def test_string_ids_round_trip_and_train_the_same_model_as_integers():
    users, items = pairs()
    by_int = fmpair().fit((users, items))
    by_str = fmpair().fit((named(users, "u"), named(items, "i")))
    np.testing.assert_array_equal(by_int.factors_, by_str.factors_)
    top_int, s_int = by_int.recommend([0, 5], k=4)
    top_str, s_str = by_str.recommend(["u000", "u005"], k=4)
    np.testing.assert_array_equal(named(top_int.ravel(), "i").reshape(top_int.shape), top_str)
    np.testing.assert_array_equal(s_int, s_str)
    np.testing.assert_allclose(by_str.predict(["u001"], ["i002"]), by_int.predict([1], [2]))


def test_mixed_ids_pandas_and_lists_of_pairs_are_the_same_interactions():
    users, items = pairs()
    mixed_u = np.array([u if u % 2 else f"s{u}" for u in users], dtype=object)
    columns = interactions((mixed_u, items))
    frame = interactions(pd.DataFrame({"user": mixed_u, "item": items}))
    rows = interactions(list(zip(mixed_u.tolist(), items.tolist())))
    for other in (frame, rows):
        assert other.ids == columns.ids
        np.testing.assert_array_equal(other.users, columns.users)
        np.testing.assert_array_equal(other.items, columns.items)
    np.testing.assert_array_equal(columns.ids.user_ids(columns.users), mixed_u)
    # a list of pairs is read as pairs, not as a 3 × 2 matrix
    three = interactions([(0, 5), (1, 6), (2, 7)])
    assert three.shape == (3, 3) and three.ids.item_ids(three.items).tolist() == [5, 6, 7]


def test_pandas_input_trains_the_same_model_as_arrays():
    users, items = pairs()
    weights = np.linspace(0.5, 2, users.size)
    a = fmpair().fit((named(users, "u"), items, weights))
    b = fmpair().fit(pd.DataFrame({"who": named(users, "u"), "what": items, "w": weights}),
                     user_col="who", item_col="what", value_col="w")
    np.testing.assert_array_equal(a.factors_, b.factors_)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((5, 2)), "ambiguous.*tuple\\(a.T\\)"),
    (([1, 2], [1]), "one length"),
    (([1, 2], [1, 2], [1.0, np.nan]), "finite"),
    ([(1, 2), (1, 2, 3)], "one length"),
    (pd.DataFrame({"u": [1]}), "no column"),
    ("interactions.csv", "must be a scipy sparse"),
])
def test_bad_inputs_name_the_fix(bad, match):
    with pytest.raises(ConfigError, match=match):
        fmpair().fit(bad)


def test_unknown_ids_are_named():
    users, items = pairs()
    model = fmpair(epochs=1).fit((named(users, "u"), named(items, "i")))
    with pytest.raises(UnknownIdError, match="'nobody'") as e:
        model.recommend(["u001", "nobody"])
    assert isinstance(e.value, KeyError) and e.value.ids == ["nobody"]
    with pytest.raises(UnknownIdError, match="item id.*'i999'"):
        model.predict(["u001"], ["i999"])
    with pytest.raises(UnknownIdError, match="'ghost'"):
        model.similar_items(["ghost"])


# -- weights and threshold ---------------------------------------------------------------
def test_weighted_bpr_coefficients_equal_numpy():
    """BPR with weights, written here: positive b's coefficient on candidate m is
    w_b · σ(-x_bm) / M, its loss w_b · Σ_m log(1 + e^(-x_bm)) / M."""
    from models.fmpair import losses
    rng = np.random.default_rng(0)
    B, M = 6, 3
    x = rng.normal(size=(B, M))
    w = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0])
    valid = np.ones((B, M), bool)
    coef, loss, counted = losses.coefficients("bpr", x, valid, 50, weights=w)
    want = w[:, None] / (1 + np.exp(x)) / M
    np.testing.assert_allclose(coef, want, rtol=1e-6)
    np.testing.assert_allclose(loss, (w * np.log1p(np.exp(-x)).sum(axis=1) / M).sum(),
                               rtol=1e-9)


def test_a_weight_zero_positive_trains_as_if_absent():
    users, items = pairs()
    weights = np.ones(users.size)
    weights[4] = 0.0
    with_zero = fmpair().fit((users, items, weights))
    without = fmpair().fit(sp.csr_matrix((np.ones(users.size - 1),
                                          (np.delete(users, 4), np.delete(items, 4))),
                                         shape=(N_USERS, N_ITEMS)))
    np.testing.assert_array_equal(with_zero.factors_, without.factors_)
    unweighted = fmpair().fit((users, items))
    assert not np.array_equal(with_zero.factors_, unweighted.factors_)


def test_weights_reach_the_training_matrix_and_the_model():
    """The training matrix holds each positive's weight (what the Trainer scales the loss
    by), and a weighted fit differs from the unweighted one."""
    from models.fmpair.positives import positives
    users, items = pairs()
    weights = np.arange(users.size) % 3 + 1.0
    want = sp.csr_matrix((weights, (users, items)), shape=(N_USERS, N_ITEMS)).toarray()
    got = positives(interactions((users, items, weights)), None).toarray()
    np.testing.assert_array_equal(got, want)
    model = fmpair(epochs=1).fit((users, items, weights))
    plain = fmpair(epochs=1).fit((users, items))
    assert not np.array_equal(model.factors_, plain.factors_)


def test_threshold_selects_positives():
    rng = np.random.default_rng(1)
    ratings = sp.random(N_USERS, N_ITEMS, density=0.5, random_state=2, format="csr",
                        data_rvs=lambda n: rng.integers(1, 6, n).astype(float))
    got = fmpair(threshold=4.0).fit(ratings, sample_weight=None).train_
    dense = ratings.toarray()
    np.testing.assert_array_equal(got.toarray() > 0, dense >= 4)
    np.testing.assert_array_equal(got.toarray()[dense >= 4], 1.0)
    # without a threshold the matrix values only select (LightFM): weights stay 1
    assert set(fmpair(epochs=1).fit(ratings).train_.data) == {1.0}
    # LightFM's sample_weight: the same stored entries
    weights = ratings.copy()
    weights.data = np.arange(weights.nnz, dtype=float) + 1
    train = fmpair(epochs=1).fit(ratings, sample_weight=weights).train_
    np.testing.assert_array_equal(train.toarray(), weights.toarray())
    with pytest.raises(ConfigError, match="stored entries"):
        fmpair(epochs=1).fit(ratings, sample_weight=sp.eye(N_USERS, N_ITEMS, format="csr"))
    with pytest.raises(ConfigError, match="negative values.*threshold"):
        fmpair(epochs=1).fit(sp.csr_matrix(-dense))


# -- fit_partial -----------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adagrad", "adabatch"])
def test_fit_partial_continues_exactly(optimizer):
    users, items = pairs()
    data = (named(users, "u"), items)
    whole = fmpair(optimizer=optimizer, epochs=5).fit(data)
    parts = fmpair(optimizer=optimizer, epochs=2).fit(data).fit_partial(data, epochs=3)
    np.testing.assert_array_equal(parts.factors_, whole.factors_)
    np.testing.assert_array_equal(parts.linear_, whole.linear_)
    assert [h.epoch for h in parts.history_] == list(range(5))
    with pytest.raises(UnknownIdError, match="'new'.*fit_partial continues"):
        parts.fit_partial((["new"], [0]))


def test_fit_partial_after_save_and_load(tmp_path):
    users, items = pairs()
    whole = fmpair(epochs=4).fit((users, items))
    first = fmpair(epochs=2).fit((users, items))
    first.save(tmp_path / "m.npz")
    loaded = LocalFMPair.load(tmp_path / "m.npz")
    loaded.set_params(show_progress=False)
    loaded.fit_partial((users, items), epochs=2)
    np.testing.assert_array_equal(loaded.factors_, whole.factors_)


# -- similarity ------------------------------------------------------------------------------
def cosine_top(vectors: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit[rows] @ unit.T
    sims[np.arange(rows.size), rows] = -np.inf
    return np.sort(sims, axis=1)[:, ::-1][:, :k]


def test_similar_items_and_users_equal_numpy_cosine():
    users, items = pairs()
    model = fmpair().fit((named(users, "u"), named(items, "i")))
    ids, scores = model.similar_items(["i000", "i004"], k=3)
    vectors = model.item_representations()[0].astype(np.float64)
    np.testing.assert_allclose(scores, cosine_top(vectors, np.array([0, 4]), 3), atol=1e-5)
    assert "i000" not in ids[0] and "i004" not in ids[1]
    rows = model.ids.item_index(ids.ravel()).reshape(ids.shape)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("d,kd->k", unit[0], unit[rows[0]]), scores[0],
                               atol=1e-5)
    _, user_scores = model.similar_users(["u003"], k=4)
    np.testing.assert_allclose(user_scores, cosine_top(
        model.user_representations().astype(np.float64), np.array([3]), 4), atol=1e-5)


def test_mf_sgd_takes_string_ids_and_recommends_them():
    users, items = pairs()
    ratings = (users * 7 + items) % 5 + 1.0
    params = dict(rank=3, epochs=2, num_workers=1, show_progress=False, num_shards=1)
    by_int = LocalMFSGD(**params).fit((users, items, ratings))
    by_str = LocalMFSGD(**params).fit(pd.DataFrame({"user": named(users, "u"),
                                                    "item": named(items, "i"),
                                                    "rating": ratings}))
    np.testing.assert_array_equal(by_int.item_factors_, by_str.item_factors_)
    top, _ = by_str.recommend(["u002"], k=3)
    want, _ = by_int.recommend([2], k=3)
    np.testing.assert_array_equal(top, named(want.ravel(), "i").reshape(want.shape))
    np.testing.assert_allclose(by_str.predict(["u002"], ["i001"]), by_int.predict([2], [1]))
    with pytest.raises(UnknownIdError, match="'zz'"):
        by_str.recommend(["zz"])


# -- hyper-parameters ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LocalFMPair, LocalMFSGD, LocalPA, LocalLDA,
                                 LocalRandomizedSVD, LocalPureSVD])
def test_signature_lists_the_spec_and_params_round_trip(cls):
    from sklearn.base import clone
    signature = inspect.signature(cls.__init__)
    for h in cls.SPEC.local:
        assert signature.parameters[h.name].default == h.default
        assert signature.parameters[h.name].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["show_progress"].default is True
    model = cls(seed=5)
    params = model.get_params()
    assert params == {**cls.SPEC.defaults(), "seed": 5}
    again = clone(model)
    assert again.get_params() == params and again is not model
    assert model.set_params(seed=9) is model and model.seed == 9
    with pytest.raises(ConfigError, match="no parameter"):
        model.set_params(nope=1)



@pytest.mark.parametrize("cls", [LocalFMPair, LocalMFSGD, LocalPA, LocalLDA,
                                 LocalRandomizedSVD, LocalPureSVD])
def test_annotations_declare_exactly_the_specs_hyper_parameters(cls):
    """LocalEstimator.__init__ sets the hyper-parameters from SPEC, so type checkers see
    them only through the classes' annotations: these must not drift from the spec."""
    hints = typing.get_type_hints(cls)
    declared = {name: hint for name, hint in hints.items()
                if not name.startswith("_") and not name.endswith("_")
                and name not in ("SPEC", "show_progress", "callback")}
    assert declared == {h.name: h.kind | None if h.optional else h.kind
                        for h in cls.SPEC.local}

def test_training_gauges_reach_the_master_while_fmpair_trains():
    """After each epoch the loop reports its loss to the master, which status shows: the
    value read there mid-fit is the epoch's loss the callback is given."""
    from psframework import Client, LocalCluster
    users, items = pairs()
    seen = []
    with LocalCluster(1, processes=False) as cluster, Client(cluster.address) as client:
        def on_epoch(epoch, elapsed, loss):
            (model,) = client.status()["models"]
            seen.append((epoch, loss, model["training"]["values"]))
        fmpair(master=cluster.address, callback=on_epoch).fit((users, items))
    assert [e for e, _, _ in seen] == [0, 1, 2]
    for epoch, loss, values in seen:
        assert values["epoch"] == epoch + 1 and values["loss"] == pytest.approx(loss)
        assert values["pairs_per_s"] > 0
