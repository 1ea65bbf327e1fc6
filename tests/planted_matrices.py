"""Matrices with known spectra for the randomized SVD's and PureSVD's tests
(tests/test_rsvd.py, tests/test_puresvd.py), and the one-BLAS-thread fixture their
numpy references run under."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """The references here are small dense LAPACK calls: one BLAS thread each, which on
    a shared 2-core machine is several times faster than OpenBLAS's threads contending."""
    with threadpool_limits(1):
        yield


def planted(m=300, n=200, *, decay=0.9, noise=0.05, density=0.3, seed=0) -> sp.csr_matrix:
    """U·diag(10·decay^j)·Vᵀ with random orthonormal U, V, plus Gaussian noise, then a
    random `density` of its entries kept (scaled by 1/sqrt(density)): a sparse matrix
    whose spectrum decays, then flattens where the sparsification's noise takes over."""
    rng = np.random.default_rng(seed)
    r = min(m, n)
    U, _ = np.linalg.qr(rng.normal(size=(m, r)))
    V, _ = np.linalg.qr(rng.normal(size=(n, r)))
    L = (U * (10.0 * decay ** np.arange(r))) @ V.T + noise * rng.normal(size=(m, n))
    A = sp.csr_matrix(L * (rng.random((m, n)) < density) / np.sqrt(density))
    A.eliminate_zeros()
    return A


def grouped(m, n, *, groups=4, cross=0.03, noise=0.05, seed=0) -> np.ndarray:
    """Sparse by construction and of rank `groups` but for small noise: rows and columns
    fall in groups, A[i, j] = w_i·x_j·c_g inside a group g, 0 across, plus `cross` of
    the cross-group entries set at random (1..5) and noise on the nonzeros. The spectrum
    has a clear gap after `groups` values (the cross entries make it less than trivial)."""
    rng = np.random.default_rng(seed)
    row_group = np.arange(m) % groups
    col_group = np.arange(n) % groups
    rng.shuffle(row_group)
    rng.shuffle(col_group)
    scale = np.linspace(1.0, 0.5, groups)
    D = np.where(row_group[:, None] == col_group[None, :],
                 np.outer(rng.uniform(0.5, 1.5, m), rng.uniform(1, 5, n))
                 * scale[row_group][:, None], 0.0)
    D[D != 0] += noise * rng.normal(size=int((D != 0).sum()))
    extra = (rng.random(D.shape) < cross) & (D == 0)
    D[extra] = rng.uniform(1, 5, int(extra.sum()))
    return D


def block_binary(n_users=120, n_items=80, *, groups=4, flip=0.05, seed=0) -> np.ndarray:
    """Implicit feedback with a gap: users × items in groups, 1 inside a group, 0 across,
    then `flip` of all entries flipped. Every user and item has an entry."""
    rng = np.random.default_rng(seed)
    ug, ig = np.arange(n_users) % groups, np.arange(n_items) % groups
    rng.shuffle(ug)
    rng.shuffle(ig)
    B = (ug[:, None] == ig[None, :]).astype(np.float64)
    flips = rng.random(B.shape) < flip
    B[flips] = 1.0 - B[flips]
    assert B.any(axis=1).all() and B.any(axis=0).all()
    return B
