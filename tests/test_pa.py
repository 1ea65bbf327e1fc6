"""LocalPA on a real cluster against references written here: a sequential numpy PA, PA-I
and PA-II (weights and progressive mistakes), scikit-learn's FeatureHasher for the hash
and its SGDClassifier(learning_rate="pa1"/"pa2") as an independent PA implementation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import SGDClassifier
from sklearn.utils import murmurhash3_32 as sk_murmur

from psframework import ConfigError
from models.pa import LocalPA
from models.pa.hashing import hash_arrow, hash_features, murmurhash3_32
from models.synthetic_text import make_messages


def reference_pa(X: np.ndarray, labels: np.ndarray, n_weights: int, variant: str, C: float,
                 intercept: bool, start: tuple | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Crammer et al.'s PA / PA-I / PA-II, one example at a time, one-vs-rest for more
    than one weight vector (label k is +1 for vector k); the intercept outside |x|².
    From zero weights, or start = (w, b). Returns (w: n_weights × d, b, mistakes
    predicted before each update)."""
    w, b = (np.zeros((n_weights, X.shape[1])), np.zeros(n_weights)) if start is None else (
        np.array(start[0], np.float64), np.array(start[1], np.float64))
    mistakes = 0
    for x, label in zip(X, labels):
        m = w @ x + (b if intercept else 0)
        predicted = int(m[0] > 0) if n_weights == 1 else int(np.argmax(m))
        mistakes += predicted != label
        sq = x @ x
        for k in range(n_weights):
            y = 1.0 if (label == 1 if n_weights == 1 else label == k) else -1.0
            loss = max(0.0, 1 - y * m[k])
            if loss == 0 or (sq == 0 and variant != "pa2"):
                continue
            tau = {"pa": loss / sq if sq else 0, "pa1": min(C, loss / sq) if sq else 0,
                   "pa2": loss / (sq + 1 / (2 * C))}[variant]
            w[k] += tau * y * x
            if intercept:
                b[k] += tau * y
    return w, b, mistakes


def sparse_data(n: int, d: int, classes: int, seed: int, noise: float = 0.0):
    """Sparse rows (30% nonzero, a few empty) labelled by a random linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.3)
    X[rng.random(n) < 0.02] = 0  # examples without features
    scores = X @ rng.normal(size=(d, classes)) + noise * rng.normal(size=(n, classes))
    y = (scores[:, 0] > 0).astype(int) if classes == 2 else scores.argmax(axis=1)
    return X.astype(np.float32), y


def test_hash_is_featurehashers():
    rng = np.random.default_rng(0)
    alphabet = list("abcxyz=é日 ")
    words = ["".join(rng.choice(alphabet, rng.integers(0, 14))) for _ in range(2000)]
    assert all(murmurhash3_32(w) == sk_murmur(w, positive=False) for w in words)
    docs = [list(rng.choice(words, rng.integers(0, 25))) for _ in range(400)]
    for bits in (3, 18):
        ours = hash_features(docs, bits)
        theirs = FeatureHasher(2 ** bits, input_type="string").transform(docs)
        assert abs(ours - theirs).max() == 0
        assert abs(hash_arrow(__import__("pyarrow").array(docs), bits) - theirs).max() == 0
    dicts = [{"price": 2.5, "colour": "red", "zero": 0, w: -1.0} for w in words[:50]]
    assert abs(hash_features(dicts, 10) - FeatureHasher(1024).transform(dicts)).max() == 0
    pairs = [[("a", 1.0), ("b", "x"), ("a", 2.0)]]
    assert abs(hash_features(pairs, 6)
               - FeatureHasher(64, input_type="pair").transform(pairs)).max() == 0


@pytest.mark.parametrize("variant", ["pa", "pa1", "pa2"])
@pytest.mark.parametrize("classes", [2, 3])
def test_one_example_per_batch_is_the_online_algorithm(cluster, variant, classes):
    X, y = sparse_data(600, 12, classes, seed=classes)
    w, b, mistakes = reference_pa(X.astype(np.float64), y, 1 if classes == 2 else classes,
                                  variant, 0.3, intercept=True)
    with LocalPA(variant=variant, C=0.3, hash_bits=4, batch_size=1, master=cluster.address,
                 show_progress=False) as model:
        steps = list(model.fit_stream((X[i:i + 200], y[i:i + 200]) for i in range(0, 600, 200)))
        np.testing.assert_allclose(model.coef_[:, :12], w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.intercept_, b, rtol=1e-4, atol=1e-5)
        assert model.coef_[:, 12:].max(initial=0) == model.coef_[:, 12:].min(initial=0) == 0
    assert steps[-1]["progressive_accuracy"] == pytest.approx(1 - mistakes / 600)
    assert [s["examples"] for s in steps] == [200, 200, 200]


def test_batches_of_one_worker_follow_one_another(cluster):
    """Each batch pulls weights holding every earlier push, so batches of 50 give the
    sequential result; without an intercept too."""
    X, y = sparse_data(500, 10, 2, seed=7, noise=0.5)
    w, _, mistakes = reference_pa(X.astype(np.float64), y, 1, "pa1", 1.0, intercept=False)
    with LocalPA(hash_bits=5, batch_size=50, fit_intercept=False, master=cluster.address,
                 show_progress=False) as model:
        (step,) = model.fit_stream([(sp.csr_matrix(X), y)])
        np.testing.assert_allclose(model.coef_[0, :10], w[0], rtol=1e-4, atol=1e-5)
        assert model.intercept_[0] == 0
        assert step["accuracy"] == pytest.approx(1 - mistakes / 500)


def test_matches_scikit_learn_pa(cluster):
    """SGDClassifier with learning_rate "pa1"/"pa2" is PA-I/PA-II (hinge at 1, the
    intercept outside |x|²): on dense input, the same weights."""
    X, y = sparse_data(800, 15, 3, seed=11, noise=0.3)
    for variant in ("pa1", "pa2"):
        sk = SGDClassifier(loss="hinge", penalty=None, learning_rate=variant, eta0=0.5,
                           shuffle=False)
        with LocalPA(variant=variant, C=0.5, hash_bits=4, batch_size=1,
                     master=cluster.address, show_progress=False) as model:
            for i in range(0, 800, 100):
                sk.partial_fit(X[i:i + 100], y[i:i + 100], classes=[0, 1, 2])
                model.partial_fit(X[i:i + 100], y[i:i + 100], classes=[0, 1, 2])
            np.testing.assert_allclose(model.coef_[:, :15], sk.coef_, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(model.intercept_, sk.intercept_, rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(model.predict(X), sk.predict(X))


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("workers", [1, 2])
def test_accuracy_near_scikit_learn_with_hashing(cluster, noise, workers):
    """Hashed messages in batches of 64, one pass: held-out accuracy within 2 points of
    scikit-learn's PA-I on the same hashed data and order, for one worker and for two
    learning at once (each batch stale by the other's; their deltas averaged)."""
    data = make_messages(6000, vocabulary=3000, label_noise=noise, seed=3)
    X = FeatureHasher(2 ** 12, input_type="string").transform(data.words)
    train, test = slice(0, 5000), slice(5000, None)
    sk = SGDClassifier(loss="hinge", penalty=None, learning_rate="pa1", eta0=1.0,
                       shuffle=False).partial_fit(X[train], data.labels[train], classes=[0, 1])
    with LocalPA(hash_bits=12, batch_size=64, num_workers=workers, master=cluster.address,
                 show_progress=False) as model:
        model.partial_fit(data.words[:5000], data.labels[train])
        ours = model.score(data.words[5000:], data.labels[test])
    theirs = sk.score(X[test], data.labels[test])
    assert theirs > 0.75 and ours >= theirs - 0.02, (ours, theirs)


def test_index_value_pairs_are_the_columns_they_name(cluster):
    """Examples as (index, value) pairs or {index: value} learn what their CSR learns."""
    X, y = sparse_data(200, 7, 2, seed=14)
    pairs = [[(int(j), float(v)) for j, v in zip(np.flatnonzero(x), x[x != 0])] if i % 2
             else {int(j): float(x[j]) for j in np.flatnonzero(x)} for i, x in enumerate(X)]
    w, b, _ = reference_pa(X.astype(np.float64), y, 1, "pa1", 1.0, intercept=True)
    with LocalPA(hash_bits=3, batch_size=8, master=cluster.address,
                 show_progress=False) as model:
        model.partial_fit(pairs, y)
        np.testing.assert_allclose(model.coef_[0, :7], w[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.decision_function(pairs[:20]),
                                   X[:20] @ model.coef_[0, :7] + model.intercept_[0],
                                   rtol=1e-5, atol=1e-5)
        with pytest.raises(ConfigError, match="outside"):
            model.partial_fit([[(9, 1.0)]], [1])


def test_fit_epochs_history_and_persistence(cluster, tmp_path):
    data = make_messages(1500, classes=3, vocabulary=800, seed=4)
    labels = np.array(["ham", "spam", "eggs"])[data.labels]
    seen = []
    model = LocalPA(hash_bits=10, max_iter=3, master=cluster.address, show_progress=False,
                    callback=lambda epoch, entry: seen.append(epoch))
    model.fit(data.words, labels)
    assert seen == [0, 1, 2] and len(model.history_) == 3
    assert model.history_[2]["accuracy"] > model.history_[0]["accuracy"]
    assert list(model.classes_) == ["eggs", "ham", "spam"]
    scores = model.decision_function(data.words)
    assert scores.shape == (1500, 3)
    np.testing.assert_array_equal(model.predict(data.words), model.classes_[scores.argmax(1)])
    model.save(tmp_path / "pa.npz")
    model.close()  # the weights stay here; scoring needs no server
    np.testing.assert_allclose(model.decision_function(data.words), scores, rtol=1e-5, atol=1e-5)
    loaded = LocalPA.load(tmp_path / "pa.npz")
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(data.words), model.predict(data.words))
    # the numpy check of the saved weights: margins by hand
    X = hash_features(data.words, 10)
    np.testing.assert_allclose(X @ loaded.coef_.T + loaded.intercept_, scores, rtol=1e-4,
                               atol=1e-4)


def test_named_model_outlives_close_and_is_continued(cluster, client):
    """A named model on an external cluster stays there; a new LocalPA of that name
    continues from it: two halves equal one sequential pass."""
    X, y = sparse_data(400, 8, 2, seed=9)
    w, b, _ = reference_pa(X.astype(np.float64), y, 1, "pa1", 1.0, intercept=True)
    first = LocalPA(hash_bits=4, batch_size=1, master=cluster.address, name="pa-continued",
                    show_progress=False)
    first.partial_fit(X[:200], y[:200], classes=[0, 1])
    first.close()
    with LocalPA(hash_bits=4, batch_size=1, master=cluster.address, name="pa-continued",
                 show_progress=False) as second:
        second.partial_fit(X[200:], y[200:])
        np.testing.assert_allclose(second.coef_[0, :8], w[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(second.intercept_, b, rtol=1e-4, atol=1e-5)
    client.destroy("pa-continued")


def test_fit_starts_afresh_even_on_a_named_model(cluster, client):
    X, y = sparse_data(300, 6, 2, seed=13)
    w, b, _ = reference_pa(X.astype(np.float64), y, 1, "pa1", 1.0, intercept=True)
    with LocalPA(hash_bits=3, batch_size=1, master=cluster.address, name="pa-refit",
                 show_progress=False) as other:
        other.partial_fit(X[::-1], y[::-1])  # something else already learned
    with LocalPA(hash_bits=3, batch_size=1, max_iter=1, shuffle=False, name="pa-refit",
                 master=cluster.address, show_progress=False) as model:
        model.fit(X, y)
        np.testing.assert_allclose(model.coef_[0, :6], w[0], rtol=1e-4, atol=1e-5)
    client.destroy("pa-refit")


def test_loaded_weights_move_to_a_new_server_model(cluster, tmp_path):
    X, y = sparse_data(300, 6, 2, seed=12)
    w, _, _ = reference_pa(X.astype(np.float64), y, 1, "pa2", 2.0, intercept=True)
    with LocalPA(variant="pa2", C=2.0, hash_bits=3, batch_size=1, master=cluster.address,
                 show_progress=False) as model:
        model.partial_fit(X[:150], y[:150], classes=[0, 1])
        model.save(tmp_path / "half.npz")
    resumed = LocalPA.load(tmp_path / "half.npz")
    resumed.partial_fit(X[150:], y[150:])  # master and name come from the saved params
    np.testing.assert_allclose(resumed.coef_[0, :6], w[0], rtol=1e-4, atol=1e-5)
    resumed.close()


def test_embedded_cluster_by_default():
    X, y = sparse_data(200, 5, 2, seed=2)
    with LocalPA(hash_bits=3, show_progress=False) as model:
        model.partial_fit(X, y)
        assert model.score(X, y) > 0.8
    assert model.score(X, y) > 0.8


def test_bad_input_is_refused_with_advice(cluster):
    model = LocalPA(hash_bits=3, master=cluster.address, show_progress=False)
    with pytest.raises(ConfigError, match="raise hash_bits"):
        model.partial_fit(np.ones((2, 9)), [0, 1])
    with pytest.raises(ConfigError, match="single string"):
        model.partial_fit(["free money", "hello"], [1, 0])
    with pytest.raises(ConfigError, match="NaN"):
        model.partial_fit(np.array([[np.nan, 1.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(ConfigError, match="at least 2 classes"):
        model.partial_fit(np.ones((2, 2)), [1, 1])
    with pytest.raises(ConfigError, match="one label per example"):
        model.partial_fit(np.ones((2, 2)), [1, 0, 1])
    with pytest.raises(ConfigError, match="variant"):
        LocalPA(variant="pa3", master=cluster.address).partial_fit(np.ones((2, 2)), [0, 1])
    with pytest.raises(ConfigError, match="learned nothing"):
        model.predict(np.ones((1, 2)))
    with pytest.raises(ConfigError, match="no parameter"):
        model.set_params(learning_rate=0.1)
    assert model.set_params(C=0.5).C == 0.5
    model.partial_fit(np.eye(2), [0, 1], classes=[0, 1])
    with pytest.raises(ConfigError, match="not one of the classes"):
        model.partial_fit(np.eye(2), [0, 2])
    model.partial_fit(np.eye(2), [1, 0])  # still learning after refusing
    model.close()
