"""LocalPureSVD (models/rsvd) against numpy: recommendations and predictions equal
R·V·Vᵀ, V the top-rank right singular vectors of numpy's exact SVD of R, on matrices
with a clear gap at the rank (explicit values, and implicit pairs as 1s); persistence,
string ids and errors. Real servers: the shared cluster of conftest."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from psframework import ConfigError
from models.ids import UnknownIdError
from models.rsvd import LocalPureSVD
from planted_matrices import block_binary, grouped, one_blas_thread  # noqa: F401  (a fixture)


def exact_scores(D: np.ndarray, rank: int) -> np.ndarray:
    """PureSVD's scores R·V·Vᵀ, V the top-`rank` right singular vectors (numpy)."""
    V = np.linalg.svd(D)[2][:rank].T
    return D @ V @ V.T


def best_scores(scores: np.ndarray, seen: np.ndarray | None, k: int) -> np.ndarray:
    """Each row's k best scores, leaving out the `seen` ones."""
    s = np.where(seen, -np.inf, scores) if seen is not None else scores
    return -np.sort(-s, axis=1)[:, :k]


def assert_recommends(model, scores, seen, k, rows, user_ids=None, item_ids=None):
    """model.recommend for the users at `rows` (asked by user_ids[rows] when given),
    filter_seen when `seen` is given, against the reference `scores`: the scores returned
    (float32) are the best k reference scores, and each item returned has the score
    returned (so the items are right but for exact ties). Returns recommend's answer."""
    rows = np.asarray(rows)
    users = rows if user_ids is None else user_ids[rows]
    got_ids, got = model.recommend(users, k=k, filter_seen=seen is not None)
    items = (got_ids if item_ids is None else
             model.ids.item_index(got_ids.ravel()).reshape(got_ids.shape))
    tol = 1e-5 * np.abs(scores).max()  # float32 scoring
    np.testing.assert_allclose(got, best_scores(scores[rows], None if seen is None
                                                else seen[rows], k), rtol=0, atol=tol)
    np.testing.assert_allclose(np.take_along_axis(scores[rows], items, axis=1), got,
                               rtol=0, atol=tol)
    if seen is not None:
        assert not np.take_along_axis(seen[rows], items, axis=1).any()
    return got_ids, got


@pytest.fixture(scope="module")
def explicit_fit(cluster):
    """Explicit ratings with a gap at rank 4, given as (users, items, values) with some
    entries split in two rows (values at one pair add up)."""
    D = grouped(120, 80, groups=4, cross=0.01, seed=9)
    assert (D != 0).any(axis=1).all() and (D != 0).any(axis=0).all()  # ids are rows
    rows, cols = np.nonzero(D)
    values = D[rows, cols]
    split = np.arange(0, rows.size, 7)
    users = np.concatenate([rows, rows[split]])
    items = np.concatenate([cols, cols[split]])
    values = values.copy()
    values[split] /= 2
    values = np.concatenate([values, values[split]])
    model = LocalPureSVD(rank=4, oversample=10, power_iter=8, master=cluster.address,
                         show_progress=False).fit((users, items, values))
    return D, model


def test_puresvd_explicit_equals_numpy_scores(explicit_fit):
    """Gap σ_4/σ_5 ≈ 5.2 and 8 power iterations: the randomized V spans numpy's top-4
    right singular subspace to ~1e-12, so scores equal R·V·Vᵀ (predict in float64 to
    1e-9 of the largest score; recommend in float32 to 1e-5)."""
    D, model = explicit_fit
    sigma = np.linalg.svd(D, compute_uv=False)
    assert sigma[3] / sigma[4] > 4
    np.testing.assert_allclose(model.singular_values_, sigma[:4], rtol=1e-10)
    scores = exact_scores(D, 4)
    users, items = np.meshgrid(np.arange(120), np.arange(80), indexing="ij")
    np.testing.assert_allclose(model.predict(users.ravel(), items.ravel()), scores.ravel(),
                               rtol=0, atol=1e-9 * np.abs(scores).max())
    seen = D != 0
    assert_recommends(model, scores, seen, 6, np.arange(120))
    assert_recommends(model, scores, None, 6, [0, 5, 119])
    # filter_seen=False recommends training items too (they score high here)
    top, _ = model.recommend([1, 2], k=3, filter_seen=False)
    assert seen[[1, 2]][np.arange(2)[:, None], top].any()


def test_puresvd_implicit_equals_numpy_scores_of_the_binary_matrix(cluster):
    """(users, items) without values: each pair seen is a 1, seen twice still 1."""
    B = block_binary(seed=10)
    users, items = np.nonzero(B)
    rng = np.random.default_rng(0)
    again = rng.choice(users.size, 60, replace=False)
    users, items = np.concatenate([users, users[again]]), np.concatenate([items, items[again]])
    order = rng.permutation(users.size)
    model = LocalPureSVD(rank=4, oversample=10, power_iter=8, master=cluster.address,
                         show_progress=False).fit(users[order], items[order])
    sigma = np.linalg.svd(B, compute_uv=False)
    assert sigma[3] / sigma[4] > 3
    np.testing.assert_allclose(model.singular_values_, sigma[:4], rtol=1e-10)
    scores = exact_scores(B, 4)
    np.testing.assert_allclose(model.predict([0, 3, 119], [5, 0, 79]),
                               scores[[0, 3, 119], [5, 0, 79]], rtol=0,
                               atol=1e-9 * np.abs(scores).max())
    assert_recommends(model, scores, B != 0, 5, np.arange(120))


def test_puresvd_save_load_string_ids_and_errors(explicit_fit, cluster, tmp_path):
    D, model = explicit_fit
    model.save(tmp_path / "puresvd.npz")
    loaded = LocalPureSVD.load(tmp_path / "puresvd.npz")
    loaded.set_params(show_progress=False)
    for a, b in zip(model.recommend(k=5), loaded.recommend(k=5)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict([3], [4]), model.predict([3], [4]))
    assert loaded.get_params() == model.get_params()

    # string ids whose sorted order is the integers': the same matrix, the same scores
    rows, cols = np.nonzero(D)
    user_ids = np.array([f"u{i:03d}" for i in range(120)], dtype=object)
    item_ids = np.array([f"i{j:03d}" for j in range(80)], dtype=object)
    named = LocalPureSVD(rank=4, oversample=10, power_iter=8, master=cluster.address,
                         show_progress=False).fit((user_ids[rows], item_ids[cols],
                                                   D[rows, cols]))
    scores = exact_scores(D, 4)
    top, _ = assert_recommends(named, scores, D != 0, 4, [2, 40], user_ids, item_ids)
    assert all(str(t).startswith("i") for t in top.ravel())
    np.testing.assert_allclose(named.predict(["u002"], ["i010"]), scores[2, 10],
                               atol=1e-9 * np.abs(scores).max())
    with pytest.raises(UnknownIdError, match="'nobody'"):
        named.recommend(["u001", "nobody"])
    with pytest.raises(UnknownIdError, match="'i999'"):
        named.predict(["u001"], ["i999"])
    with pytest.raises(ConfigError, match=r"rank = 81 .*min\(120, 80\) = 80"):
        LocalPureSVD(rank=81, master=cluster.address, show_progress=False).fit(
            sp.csr_matrix(D))
    with pytest.raises(ConfigError, match="finite"):
        LocalPureSVD(rank=2, master=cluster.address, show_progress=False).fit(
            ([0, 1], [1, 0], [1.0, np.nan]))
