"""Randomized SVD from plain Python: the top singular values of a sparse matrix with a
planted spectrum, computed on an embedded parameter server, beside numpy's exact ones and
scikit-learn's randomized_svd; then the same matrix with more power iterations.

    python examples/rsvd_local.py
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds
from sklearn.utils.extmath import randomized_svd as sklearn_randomized_svd

from models.rsvd import LocalRandomizedSVD


def planted(m: int, n: int, k: int, density: float, seed: int) -> sp.csr_matrix:
    """A sparse m × n matrix: a rank-2k signal with singular values decaying from 100,
    sampled on a random `density` of the entries (so the spectrum's tail is noise)."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(m, 2 * k)))[0]
    v = np.linalg.qr(rng.normal(size=(n, 2 * k)))[0]
    signal = (u * 100 * 0.85 ** np.arange(2 * k)) @ v.T
    keep = sp.random(m, n, density, random_state=seed, format="csr")
    keep.data[:] = 1 / density
    return keep.multiply(signal).tocsr()


def main() -> None:
    k = 10
    A = planted(20_000, 5_000, k, 0.01, seed=0)
    print(f"A: {A.shape[0]:,} × {A.shape[1]:,}, {A.nnz:,} nonzeros; k = {k}")
    exact = np.sort(svds(A, k=k, return_singular_vectors=False))[::-1]
    began = time.perf_counter()
    svd = LocalRandomizedSVD(k=k, oversample=10, power_iter=2).fit(A)  # a bar on stderr
    ours = time.perf_counter() - began
    moved = sum(h["bytes_pulled"] + h["bytes_pushed"] for h in svd.history_)
    began = time.perf_counter()
    _, s_sk, _ = sklearn_randomized_svd(A, k, n_oversamples=10, n_iter=2, random_state=0)
    theirs = time.perf_counter() - began
    print("exact (svds):     ", np.round(exact[:5], 2))
    print("psframework:      ", np.round(svd.singular_values_[:5], 2))
    print(f"relative error: psframework {np.abs(svd.singular_values_ / exact - 1).max():.2e} "
          f"in {ours:.2f} s ({moved / 1e6:.0f} MB through the parameter server), "
          f"scikit-learn {np.abs(s_sk / exact - 1).max():.2e} in {theirs:.2f} s")
    for q in (0, 1, 4):
        s = LocalRandomizedSVD(k=k, power_iter=q, show_progress=False).fit(A).singular_values_
        print(f"power_iter={q}: relative error {np.abs(s / exact - 1).max():.2e}")
    rows = A[:3]
    print("first rows projected on V (transform):", np.round(svd.transform(rows)[:, :3], 2))


if __name__ == "__main__":
    main()
