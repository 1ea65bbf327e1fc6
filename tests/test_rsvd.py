"""The randomized SVD on the parameter server (models/rsvd) against numpy, scipy and
scikit-learn computed here: the spectral error and the singular values within Halko,
Martinsson and Tropp's bounds (SIAM Review 2011), subspace angles within Wedin's bound,
power iterations that never hurt, the result independent of shards and workers (and
equal to Halko's algorithm written here in numpy, on the server's own Ω), agreement with
scikit-learn's randomized_svd, edge cases and errors, and the bytes each pass moves.
LocalPureSVD: tests/test_puresvd.py; the matrices: tests/planted_matrices.py. Real
servers: the shared cluster of conftest (2 shard processes) and, for other shard counts,
in-process ones; small matrices (at most 300 × 200)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.linalg import subspace_angles

from conftest import FAST
from planted_matrices import grouped, one_blas_thread, planted  # noqa: F401  (a fixture)
from psframework import Client, ConfigError, LocalCluster
from models.rsvd import LocalRandomizedSVD, randomized_svd

ORTHO = 1e-10  # UᵀU = I and VᵀV = I to this (a QR in float64 gives ~1e-15)


# -- data: tests/planted_matrices.py ----------------------------------------------------------
def spectral(D: np.ndarray) -> float:
    return float(np.linalg.norm(D, 2))


def assert_orthonormal(U: np.ndarray, Vt: np.ndarray) -> None:
    k = U.shape[1]
    np.testing.assert_allclose(U.T @ U, np.eye(k), rtol=0, atol=ORTHO)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(k), rtol=0, atol=ORTHO)


def assert_same_up_to_signs(U, s, Vt, U_ref, s_ref, Vt_ref, atol):
    """(U, s, Vt) equals the reference but for a sign per singular pair (the same sign
    on u_j and v_j)."""
    np.testing.assert_allclose(s, s_ref, rtol=1e-12, atol=atol)
    signs = np.sign(np.sum(U * U_ref, axis=0))
    assert np.all(signs != 0)
    np.testing.assert_allclose(U * signs, U_ref, rtol=0, atol=atol)
    np.testing.assert_allclose(Vt * signs[:, None], Vt_ref, rtol=0, atol=atol)


# -- Halko, Martinsson and Tropp's bounds ------------------------------------------------
def expected_bound(sigma, k, p, q) -> float:
    """Corollary 10.10: E‖(I − P_Y)A‖ for Y = (AAᵀ)^q·A·Ω, Ω Gaussian n × (k + p), p >= 2,
    is at most [(1 + sqrt(k/(p−1)))·σ_{k+1}^{2q+1}
                + e·sqrt(k+p)/p·(Σ_{j>k} σ_j^{2(2q+1)})^{1/2}]^{1/(2q+1)}."""
    tail = sigma[k:] ** (2 * q + 1)
    inner = ((1 + np.sqrt(k / (p - 1))) * tail[0]
             + np.e * np.sqrt(k + p) / p * np.sqrt(np.sum(tail ** 2)))
    return float(inner ** (1 / (2 * q + 1)))


T_DEV, U_DEV = 10.0, 5.0


def deviation_bound(sigma, k, p, q, t=T_DEV, u=U_DEV) -> float:
    """Theorem 10.8 (p >= 4, t, u >= 1) for B = (AAᵀ)^q·A, whose singular values are
    σ_j^{2q+1}, carried to A by Theorem 9.2 (‖(I − P_Y)A‖^{2q+1} <= ‖(I − P_Y)B‖):
    ‖(I − P_Y)A‖ <= [(1 + t·sqrt(12k/p))·σ_{k+1}^{2q+1}
                     + t·e·sqrt(k+p)/(p+1)·(Σ_{j>k} σ_j^{2(2q+1)})^{1/2}
                     + u·t·e·sqrt(k+p)/(p+1)·σ_{k+1}^{2q+1}]^{1/(2q+1)}
    except with probability at most 2·t^(−p) + e^(−u²/2): with t = 10, u = 5 and p = 4
    that is 2e-4 + 4e-6 per draw of Ω."""
    assert p >= 4
    tail = sigma[k:] ** (2 * q + 1)
    c = np.e * np.sqrt(k + p) / (p + 1)
    inner = ((1 + t * np.sqrt(12 * k / p)) * tail[0] + t * c * np.sqrt(np.sum(tail ** 2))
             + u * t * c * tail[0])
    return float(inner ** (1 / (2 * q + 1)))


MATRICES = {"decay-0.9": dict(decay=0.9, density=0.3, seed=0),
            "decay-0.7-sparser": dict(decay=0.7, density=0.1, seed=1)}
SEEDS = range(4)


@pytest.mark.parametrize("matrix,p,q", [
    ("decay-0.9", 2, 0), ("decay-0.9", 2, 1), ("decay-0.9", 4, 0), ("decay-0.9", 5, 1),
    ("decay-0.9", 4, 3), ("decay-0.7-sparser", 2, 1), ("decay-0.7-sparser", 10, 2)])
def test_error_and_singular_values_within_halko_bounds(cluster, matrix, p, q):
    """For several seeds of Ω:
    - the range finder's error ε = ‖A − Q·Qᵀ·A‖₂ (a run with k + p singular values and
      no oversampling has the same Ω, n × (k + p), so its U·S·Vt is exactly Q·Qᵀ·A):
      the mean over the seeds within Corollary 10.10's expectation bound (a mean of 4
      draws is not guaranteed below the expectation; the bound is loose enough that it
      is, by a margin: observed mean / bound from 0.04 (q = 0) to 0.73 (q = 3)); every
      seed within Theorem 10.8's deviation bound when p >= 4, else within 10 × the
      expectation bound (Markov on ‖(I − P_Y)B‖: fails with probability <= 10^-(2q+1));
    - the rank-k result: ‖A − U·S·Vt‖₂ <= σ_{k+1} + ε (Theorem 9.3), deterministic;
    - its singular values are those of QᵀA, so σ_j − ε <= s_j <= σ_j (Weyl and the
      projection's contraction), deterministic;
    - U and Vt orthonormal."""
    A = planted(**MATRICES[matrix])
    D = A.toarray()
    sigma = np.linalg.svd(D, compute_uv=False)
    k = 10
    expected = expected_bound(sigma, k, p, q)
    per_seed = deviation_bound(sigma, k, p, q) if p >= 4 else 10 * expected
    errors = []
    for seed in SEEDS:
        common = dict(power_iter=q, seed=seed, master=cluster.address, show_progress=False)
        Uw, sw, Vtw = randomized_svd(A, k + p, oversample=0, **common)
        eps = spectral(D - (Uw * sw) @ Vtw)
        errors.append(eps)
        assert eps <= per_seed, (seed, eps, per_seed)
        U, s, Vt = randomized_svd(A, k, oversample=p, **common)
        assert U.shape == (300, k) and s.shape == (k,) and Vt.shape == (k, 200)
        assert np.all(np.diff(s) <= 0)
        assert spectral(D - (U * s) @ Vt) <= sigma[k] + eps + 1e-10 * sigma[0]
        assert np.all(s <= sigma[:k] * (1 + 1e-10))
        assert np.all(sigma[:k] - s <= eps + 1e-10 * sigma[0])
        assert_orthonormal(U, Vt)
    assert np.mean(errors) <= expected, (errors, expected)


# -- subspaces -------------------------------------------------------------------------------
def test_singular_subspaces_within_wedins_bound(cluster):
    """The computed top-k left and right singular subspaces against numpy's, for a sparse
    matrix with a clear gap after k (σ_4 / σ_5 ≈ 6.4): Wedin's theorem (Stewart & Sun
    V.4.4) bounds the sines of the angles by max(‖A·V − U·S‖, ‖Aᵀ·U − V·S‖) / δ with
    δ = s_k − σ_{k+1} > 0, from the computed triplets alone (observed: within a factor
    1.2-1.5 of the sines, so it is tight here); and each power iteration shrinks them by
    the gap squared: sin θ <= 20·(σ_{k+1}/σ_k)^{2q+1} for q >= 1 (observed constant
    about 1-2: 6e-3, 9e-5, 1.5e-6 for q = 1, 2, 3)."""
    D = grouped(300, 200, groups=4)
    A = sp.csr_matrix(D)
    k = 4
    U_np, sigma, Vt_np = np.linalg.svd(D)
    assert sigma[k - 1] / sigma[k] > 6
    for q in range(4):
        U, s, Vt = randomized_svd(A, k, oversample=5, power_iter=q, seed=3,
                                  master=cluster.address, show_progress=False)
        assert_orthonormal(U, Vt)
        delta = s[-1] - sigma[k]
        assert delta > 0
        residual = max(spectral(D @ Vt.T - U * s), spectral(D.T @ U - Vt.T * s))
        wedin = residual / delta
        sin_left = np.sin(subspace_angles(U, U_np[:, :k]).max())
        sin_right = np.sin(subspace_angles(Vt.T, Vt_np[:k].T).max())
        assert max(sin_left, sin_right) <= wedin * (1 + 1e-9) + 1e-12, (q, sin_left, wedin)
        if q >= 1:
            assert max(sin_left, sin_right) <= 20 * (sigma[k] / sigma[k - 1]) ** (2 * q + 1)


# -- power iterations --------------------------------------------------------------------
@pytest.mark.parametrize("matrix", sorted(MATRICES))
def test_more_power_iterations_never_hurt(cluster, matrix):
    """Same seed, hence the same Ω: q = 0..3 power iterations. The rank-k error
    ‖A − U·S·Vt‖₂ and every singular value's error σ_j − s_j do not increase with q
    (1e-9 relative slack for rounding). Not a theorem for every matrix and Ω — the spans
    of (AAᵀ)^q·A·Ω are not nested — but on these spectra it holds by a wide margin:
    in 6 seeds × 2 matrices, q = 0..4, each step lowered the error by >= 0.2% of σ_1 and
    every σ_j − s_j by >= 1e-5·σ_1, far above the slack."""
    A = planted(**MATRICES[matrix])
    D = A.toarray()
    sigma = np.linalg.svd(D, compute_uv=False)
    k, slack = 10, 1e-9 * sigma[0]
    for seed in (0, 1):
        errors, gaps = [], []
        for q in range(4):
            U, s, Vt = randomized_svd(A, k, oversample=5, power_iter=q, seed=seed,
                                      master=cluster.address, show_progress=False)
            errors.append(spectral(D - (U * s) @ Vt))
            gaps.append(sigma[:k] - s)
        assert np.all(np.diff(errors) <= slack), (seed, errors)
        assert np.all(np.diff(gaps, axis=0) <= slack), (seed, np.diff(gaps, axis=0))
        assert errors[-1] < errors[0]


# -- shards and workers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_and_three_shards():
    """In-process clusters of 1 and 3 shards (the shared one has 2)."""
    with LocalCluster(1, processes=False, **FAST) as one, \
            LocalCluster(3, processes=False, **FAST) as three:
        yield {1: one.address, 3: three.address}


def server_omega(master: str, rows: int, cols: int, width: int, seed: int) -> np.ndarray:
    """The test matrix Ω the `rsvd` model starts its `right` table with, read back."""
    from psframework import Client
    with Client(master) as client:
        name = f"omega-{rows}-{cols}-{width}-{seed}"
        client.create_model(name, "rsvd", {"rows": rows, "cols": cols, "width": width,
                                           "seed": seed})
        try:
            return client.pull_rows(name, "right", np.arange(cols))
        finally:
            client.destroy(name)


def halko_numpy(D: np.ndarray, omega: np.ndarray, k: int, q: int):
    """Halko et al.'s Algorithm 4.4 (a QR after every product) and 5.1, plain numpy."""
    Q = np.linalg.qr(D @ omega)[0]
    for _ in range(q):
        Q = np.linalg.qr(D @ np.linalg.qr(D.T @ Q)[0])[0]
    Ub, s, Vt = np.linalg.svd(Q.T @ D, full_matrices=False)
    return (Q @ Ub)[:, :k], s[:k], Vt[:k]


def test_independent_of_shards_and_workers_and_equal_to_numpy_halko(cluster,
                                                                    one_and_three_shards):
    """1, 2 and 3 shards × 1, 2 and 4 workers give one U, s, Vt to 1e-9 (Ω is seeded by
    rows and TSQR's R has a positive diagonal), equal to Halko's algorithm in numpy on
    the server's own Ω (but for a sign per singular pair: numpy's QR fixes none)."""
    A = planted(seed=2)
    D = A.toarray()
    k, p, q, seed = 8, 6, 2, 7
    masters = {2: cluster.address, **one_and_three_shards}
    omegas = {shards: server_omega(master, *D.shape, k + p, seed)
              for shards, master in masters.items()}
    omega = omegas[2]
    for other in omegas.values():
        np.testing.assert_array_equal(other, omega)
    assert abs(omega.mean()) < 0.1 and abs(omega.std() - 1) < 0.1  # standard Gaussian
    U_ref, s_ref, Vt_ref = halko_numpy(D, omega, k, q)
    first = None
    for shards, master in sorted(masters.items()):
        for workers in (1, 2, 4):
            U, s, Vt = randomized_svd(A, k, oversample=p, power_iter=q, seed=seed,
                                      master=master, num_workers=workers,
                                      show_progress=False)
            assert_same_up_to_signs(U, s, Vt, U_ref, s_ref, Vt_ref, atol=1e-9)
            if first is None:
                first = U, s, Vt
            for got, want in zip((U, s, Vt), first):
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-9,
                                           err_msg=f"{shards} shards, {workers} workers")


# -- scikit-learn ----------------------------------------------------------------------------
@pytest.mark.parametrize("p,q", [(5, 1), (10, 2)])
def test_agrees_with_scikit_learns_randomized_svd(cluster, p, q):
    """Same k, p, q (scikit-learn's QR normalizer: the same algorithm), different Ω: over
    6 seeds each, the mean over seeds of max_j (σ_j − s_j)/σ_j of the two within a
    factor 2.5 of each other (two means of 6 draws of one distribution: in 400 draws of
    scikit-learn's own, the ratio of two such means stayed within [0.58, 1.71] at the
    99.9% quantiles), both mean rank-k errors within σ_{k+1} + Corollary 10.10's bound,
    and every s_j <= σ_j for both."""
    from sklearn.utils.extmath import randomized_svd as sklearn_rsvd
    A = planted(decay=0.9, seed=3)
    D = A.toarray()
    sigma = np.linalg.svd(D, compute_uv=False)
    k = 10
    bound = sigma[k] + expected_bound(sigma, k, p, q)
    ours, theirs = [], []
    for seed in range(6):
        for out, (U, s, Vt) in (
                (ours, randomized_svd(A, k, oversample=p, power_iter=q, seed=seed,
                                      master=cluster.address, show_progress=False)),
                (theirs, sklearn_rsvd(A, k, n_oversamples=p, n_iter=q,
                                      power_iteration_normalizer="QR", random_state=seed))):
            assert np.all(s <= sigma[:k] * (1 + 1e-10))
            out.append((np.max((sigma[:k] - s) / sigma[:k]), spectral(D - (U * s) @ Vt)))
    ours_rel, ours_err = np.mean(ours, axis=0)
    theirs_rel, theirs_err = np.mean(theirs, axis=0)
    assert theirs_rel / 2.5 <= ours_rel <= 2.5 * theirs_rel, (ours_rel, theirs_rel)
    assert ours_err <= bound and theirs_err <= bound, (ours_err, theirs_err, bound)


# -- edge cases and errors ---------------------------------------------------------------
def fit_svd(cluster, X, k, **kw) -> LocalRandomizedSVD:
    params = dict(master=cluster.address, show_progress=False, **kw)
    return LocalRandomizedSVD(k=k, **params).fit(X)


def test_k_above_the_smaller_side_is_a_config_error_naming_k(cluster):
    A = planted(40, 25)
    with pytest.raises(ConfigError, match=r"k = 26 .*min\(40, 25\) = 25"):
        randomized_svd(A, 26, master=cluster.address, show_progress=False)
    with pytest.raises(ConfigError, match=r"k = 6 "):
        randomized_svd(np.ones((5, 9)), 6, master=cluster.address, show_progress=False)


@pytest.mark.parametrize("shape", [(40, 25), (25, 40)])
@pytest.mark.parametrize("dense", [False, True])
def test_width_clamped_to_the_smaller_side_gives_the_exact_svd(cluster, shape, dense):
    """k + oversample > min(m, n): the sketch is min(m, n) wide, spans A's whole range,
    and the result is numpy's SVD (top k), for sparse and dense numpy input alike."""
    D = planted(*shape, seed=4).toarray()
    k = 20
    U_np, s_np, Vt_np = np.linalg.svd(D, full_matrices=False)
    U, s, Vt = randomized_svd(D if dense else sp.csr_matrix(D), k, oversample=10,
                              power_iter=1, master=cluster.address, show_progress=False)
    assert_same_up_to_signs(U, s, Vt, U_np[:, :k], s_np[:k], Vt_np[:k], atol=1e-9)
    assert_orthonormal(U, Vt)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_a_config_error(cluster, bad):
    D = planted(30, 20).toarray()
    D[3, 4] = bad
    with pytest.raises(ConfigError, match="NaN or infinite"):
        randomized_svd(D, 2, master=cluster.address, show_progress=False)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        randomized_svd(sp.csr_matrix(D), 2, master=cluster.address, show_progress=False)


@pytest.mark.parametrize("bad,match", [(np.ones(5), "2-d matrix"),
                                       (np.array([["a", "b"]]), "2-d matrix of numbers"),
                                       (np.zeros((0, 3)), "empty")])
def test_inputs_that_are_not_matrices_are_config_errors(cluster, bad, match):
    with pytest.raises(ConfigError, match=match):
        randomized_svd(bad, 1, master=cluster.address, show_progress=False)


@pytest.mark.parametrize("q", [0, 2])
def test_rows_and_columns_without_entries(cluster, q):
    """Empty rows (first, inside, last) and empty columns: U has zero rows and V zero
    rows there, the rest as numpy's (q = 2 also checks that a pass over A leaves 0, not
    the previous pass's values, in rows without entries)."""
    D = grouped(60, 40, groups=3, cross=0.0)
    empty_rows, empty_cols = [0, 7, 59], [0, 3, 39]
    D[empty_rows] = 0.0
    D[:, empty_cols] = 0.0
    k = 3
    U_np, s_np, Vt_np = np.linalg.svd(D, full_matrices=False)
    assert s_np[k - 1] / s_np[k] > 3
    U, s, Vt = randomized_svd(sp.csr_matrix(D), k, oversample=5, power_iter=q,
                              master=cluster.address, num_workers=3, show_progress=False)
    assert np.abs(U[empty_rows]).max() < 1e-12
    assert np.abs(Vt[:, empty_cols]).max() < 1e-12
    assert_orthonormal(U, Vt)
    tol = 1e-2 if q == 0 else 1e-7  # q = 0: one sketch, off by the gap's (σ_4/σ_3)^1
    np.testing.assert_allclose(s, s_np[:k], rtol=tol)
    assert np.sin(subspace_angles(U, U_np[:, :k]).max()) < 10 * tol
    assert np.sin(subspace_angles(Vt.T, Vt_np[:k].T).max()) < 10 * tol


def test_rank_deficient_matrix(cluster):
    """Rank 3, k = 5: three singular values right, two ~0, U and V still orthonormal."""
    rng = np.random.default_rng(5)
    D = rng.normal(size=(60, 3)) @ rng.normal(size=(3, 40))
    s_np = np.linalg.svd(D, compute_uv=False)
    U, s, Vt = randomized_svd(sp.csr_matrix(D), 5, master=cluster.address,
                              show_progress=False)
    np.testing.assert_allclose(s[:3], s_np[:3], rtol=1e-12)
    assert np.all(np.abs(s[3:]) < 1e-12 * s_np[0])
    assert_orthonormal(U, Vt)
    np.testing.assert_allclose((U * s) @ Vt, D, rtol=0, atol=1e-11 * s_np[0])


def test_transform_and_vectors_left_out(cluster):
    A = planted(80, 50, seed=6)
    D = A.toarray()
    svd = fit_svd(cluster, A, 5, oversample=10, power_iter=2)
    X = np.random.default_rng(0).normal(size=(7, 50))
    np.testing.assert_allclose(svd.transform(X), X @ svd.components_.T, rtol=1e-12)
    # of the fitted matrix itself: X·V = U·S, up to the approximation's error
    np.testing.assert_allclose(svd.transform(A), svd.U_ * svd.singular_values_,
                               atol=spectral(D - (svd.U_ * svd.singular_values_)
                                             @ svd.components_) + 1e-12)
    with pytest.raises(ConfigError, match="50"):
        svd.transform(X[:, :49])
    no_u = fit_svd(cluster, A, 5, oversample=10, power_iter=2,
                   compute_left_singular_vectors=False)
    assert no_u.U_ is None and no_u.components_.shape == (5, 50)
    # the same Ω and passes: only the rotation of `left` is left out
    np.testing.assert_allclose(no_u.singular_values_, svd.singular_values_, rtol=1e-12)
    np.testing.assert_allclose(no_u.components_, svd.components_, rtol=0, atol=1e-12)
    assert np.all(svd.singular_values_ <= np.linalg.svd(D, compute_uv=False)[:5] + 1e-12)
    no_v = fit_svd(cluster, A, 5, compute_right_singular_vectors=False)
    assert no_v.components_ is None and no_v.U_.shape == (80, 5)
    with pytest.raises(ConfigError, match="compute_right_singular_vectors"):
        no_v.transform(X)
    with pytest.raises(ConfigError, match="not fitted"):
        LocalRandomizedSVD(k=2).transform(X)


def test_signs_are_scikit_learns_svd_flip(cluster):
    """randomized_svd's docstring promises scikit-learn's signs: svd_flip makes the
    entry of largest magnitude of each column of U positive."""
    U, _, _ = randomized_svd(planted(), 10, master=cluster.address, show_progress=False)
    assert np.all(U[np.abs(U).argmax(axis=0), np.arange(U.shape[1])] > 0)


def test_fewer_rows_than_shards(cluster):
    D = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])  # 1 × 5: `left` has 1 partition, `right` 2
    U, s, Vt = randomized_svd(D, 1, master=cluster.address, show_progress=False)
    np.testing.assert_allclose(s, np.linalg.svd(D, compute_uv=False)[:1], rtol=1e-12)


# -- the history -----------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 3])
def test_history_counts_the_bytes_each_pass_moves(cluster, workers):
    """2(q + 1) passes, named after their products; each moves the rows of the
    tall-and-skinny tables its blocks touch, width × 8 bytes a row. Rows of A are in one
    block each, so a forward pass pushes, and a backward pass pulls, exactly the
    nonempty rows; a column is pulled (forward) or pushed (backward) once per block
    that has entries in it: with one worker exactly the nonempty columns."""
    D = planted(90, 70, density=0.1, seed=8).toarray()
    D[[4, 50]] = 0.0
    D[:, [0, 69, 13]] = 0.0
    A = sp.csr_matrix(D)
    k, p, q = 4, 3, 2
    seen = []
    svd = LocalRandomizedSVD(k=k, oversample=p, power_iter=q, num_workers=workers,
                             master=cluster.address, show_progress=False,
                             callback=lambda i, entry: seen.append((i, dict(entry)))).fit(A)
    row = (k + p) * 8
    rows = int((np.abs(D).sum(axis=1) > 0).sum())
    cols = int((np.abs(D).sum(axis=0) > 0).sum())
    assert (rows, cols) == (88, 67)
    history = svd.history_
    assert [h["pass"] for h in history] == ["A·Ω"] + ["Aᵀ·Q", "A·Q_n"] * q + ["Aᵀ·Q"]
    assert seen == list(enumerate(history))
    for h in history:
        assert h["bytes_pulled"] > 0 and h["bytes_pushed"] > 0 and h["seconds"] >= 0
        forward = h["pass"] != "Aᵀ·Q"
        rows_moved = h["bytes_pushed"] if forward else h["bytes_pulled"]
        cols_moved = h["bytes_pulled"] if forward else h["bytes_pushed"]
        assert rows_moved == rows * row
        if workers == 1:
            assert cols_moved == cols * row
        else:
            assert cols * row < cols_moved <= workers * cols * row


def test_progress_gauges_reach_the_master_after_every_pass():
    """After each pass the driver reports it to the master, which status shows: read
    there from the callback, the count is the pass's and the seconds and MB moved are the
    history entry's."""
    seen = []
    with LocalCluster(1, processes=False, **FAST) as cluster, \
            Client(cluster.address) as client:
        def on_pass(index, entry):
            (model,) = client.status()["models"]
            seen.append((index, entry, model["training"]["values"]))
        LocalRandomizedSVD(k=3, power_iter=1, master=cluster.address, show_progress=False,
                           callback=on_pass).fit(planted(60, 40))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3]
    for index, entry, values in seen:
        assert values["passes"] == index + 1
        assert values["pass_seconds"] == pytest.approx(entry["seconds"])
        assert values["pass_mb_moved"] == pytest.approx(
            (entry["bytes_pulled"] + entry["bytes_pushed"]) / 1e6)
