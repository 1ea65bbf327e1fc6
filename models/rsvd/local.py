"""The randomized SVD and PureSVD from plain Python, on the parameter server.

    U, s, Vt = randomized_svd(X, 50)                    # as scikit-learn's randomized_svd
    svd = LocalRandomizedSVD(k=50, power_iter=3).fit(X) # U_, singular_values_, components_
    model = LocalPureSVD(rank=50).fit((users, items))   # recommend(users, k=10), as the others

The matrix is cut into `num_workers` blocks of rows, each multiplied on its own thread
against the `rsvd` model's tables on the cluster at `master` (an embedded one by
default), exactly as the Spark partitions of `RandomizedSVD` are (`models.rsvd.halko`).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from psframework import AsyncClient, ConfigError
from models.recommender import LocalRecommender
from models.local_estimator import LocalEstimator
from models.rsvd.blocks import Blocks
from models.rsvd.halko import decompose, passes
from models.rsvd.plugin import LEFT, RIGHT
from models.rsvd.spec import PURESVD_SPEC, SPEC

__all__ = ["randomized_svd", "LocalRandomizedSVD", "LocalPureSVD", "as_matrix", "width"]


def as_matrix(X: Any, what: str = "X") -> sp.csr_matrix:
    """`X` (a scipy sparse matrix or a 2-d array of numbers) as a float64 CSR matrix with
    finite values; a ConfigError saying what is wrong otherwise."""
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise ConfigError(f"{what} must be a 2-d matrix of numbers (scipy sparse or "
                              f"numpy), got {X.dtype}{list(X.shape)}")
    X = sp.csr_matrix(X, dtype=np.float64)
    if min(X.shape) < 1:
        raise ConfigError(f"{what} is empty: shape {X.shape}")
    X.sum_duplicates()
    X.eliminate_zeros()  # a stored zero is no entry: its row and column are not touched
    if not np.isfinite(X.data).all():
        raise ConfigError(f"{what} holds NaN or infinite values; drop or replace them")
    return X


def width(k: int, oversample: int, shape: tuple[int, int], what: str = "k") -> int:
    """Columns of the sketch: k + oversample, at most min(m, n); a ConfigError if k
    itself is more than min(m, n)."""
    if k > min(shape):
        raise ConfigError(f"{what} = {k} is more than the matrix has singular values "
                          f"(min{tuple(shape)} = {min(shape)}); choose {what} <= {min(shape)}")
    return min(k + oversample, min(shape))


class LocalRandomizedSVD(LocalEstimator):
    """Truncated SVD by Halko et al.'s randomized algorithm on the parameter server.

    Hyper-parameters (keyword-only; `models.rsvd.spec`): k, oversample, power_iter, seed,
    compute_left_singular_vectors, compute_right_singular_vectors, num_workers, master,
    num_shards. After fit: `singular_values_` (k, descending), `U_` (m × k) and
    `components_` (Vᵀ, k × n, scikit-learn's TruncatedSVD name) when computed, and
    `history_`: per pass over the matrix, its seconds and the bytes it pulled and pushed.
    callback(pass, entry) after each pass."""

    SPEC = SPEC
    k: int
    oversample: int
    power_iter: int
    seed: int
    compute_left_singular_vectors: bool
    compute_right_singular_vectors: bool
    num_workers: int
    singular_values_: np.ndarray
    U_: np.ndarray | None
    components_: np.ndarray | None
    history_: list[dict[str, Any]]

    def fit(self, X: Any, y: Any = None) -> "LocalRandomizedSVD":
        """Decompose X (m × n, scipy sparse or a 2-d array); y is ignored."""
        self._validate()
        A = as_matrix(X)
        w = width(self.k, self.oversample, A.shape)
        self.history_ = []
        self._on_cluster(lambda master: self._fit(master, A, w))
        return self

    async def _fit(self, master: str, A: sp.csr_matrix, w: int) -> None:
        (m, n), k = A.shape, self.k
        name = f"rsvd-{uuid.uuid4().hex[:12]}"
        bar = self._bar(passes(self.power_iter), "passes", "rsvd")
        async with AsyncClient(master) as client:
            await client.create_model(name, "rsvd", {"rows": m, "cols": n, "width": w,
                                                     "seed": self.seed})
            try:
                over = Blocks.split(client, name, A, self.num_workers)

                def on_pass(entry: dict) -> None:
                    self.history_.append(entry)
                    if bar is not None:
                        moved = sum(h["bytes_pulled"] + h["bytes_pushed"] for h in self.history_)
                        bar.update(1)
                        bar.set_postfix(step=entry["pass"], MB_moved=f"{moved / 1e6:,.0f}")
                    if self.callback is not None:
                        self.callback(len(self.history_) - 1, entry)

                self.singular_values_ = await decompose(client, name, over, k, self.power_iter,
                                                        on_pass=on_pass)
                self.U_ = (await client.pull_rows(name, LEFT, np.arange(m)))[:, :k].copy() \
                    if self.compute_left_singular_vectors else None
                self.components_ = (await client.pull_rows(name, RIGHT, np.arange(n)))[
                    :, :k].T.copy() if self.compute_right_singular_vectors else None
            finally:
                if bar is not None:
                    bar.close()
                await client.destroy(name)

    def _fitted(self) -> None:
        if not hasattr(self, "singular_values_"):
            raise ConfigError("this LocalRandomizedSVD is not fitted yet; call fit()")

    def transform(self, X: Any) -> np.ndarray:
        """X projected on the right singular vectors: X · V (scikit-learn's
        TruncatedSVD.transform)."""
        self._fitted()
        if self.components_ is None:
            raise ConfigError("transform needs V: fit with compute_right_singular_vectors=True")
        X = as_matrix(X)
        if X.shape[1] != self.components_.shape[1]:
            raise ConfigError(f"X has {X.shape[1]} columns; the fitted matrix had "
                              f"{self.components_.shape[1]}")
        return np.asarray(X @ self.components_.T)


def randomized_svd(matrix: Any, k: int, *, oversample: int = 10, power_iter: int = 2,
                   seed: int = 0, master: str | None = None, num_shards: int = 2,
                   num_workers: int = 2, show_progress: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U, s, Vt) of the rank-k truncated SVD of `matrix` (scipy sparse, or a 2-d
    array), as scikit-learn's `randomized_svd(M, k, n_oversamples=oversample,
    n_iter=power_iter)` returns them: U m × k, s descending, Vt k × n; signs as its
    svd_flip. Computed on the cluster at `master` (default: an embedded one)."""
    svd = LocalRandomizedSVD(k=k, oversample=oversample, power_iter=power_iter, seed=seed,
                             master=master, num_shards=num_shards, num_workers=num_workers,
                             show_progress=show_progress).fit(matrix)
    assert svd.U_ is not None and svd.components_ is not None  # both asked for
    return svd.U_, svd.singular_values_, svd.components_


class LocalPureSVD(LocalRecommender):
    """PureSVD (Cremonesi et al. 2010): the truncated SVD R ≈ U·Σ·Vᵀ of the user × item
    matrix (missing entries 0), scoring r_u · V · Vᵀ; recommend, predict and the rest
    as the other local recommenders (`models.recommender`).

    Hyper-parameters (keyword-only; `models.rsvd.spec`): rank, oversample, power_iter,
    seed, num_workers, master, num_shards. After fit: `item_factors_` (V, items × rank),
    `user_factors_` (R·V, users × rank), `singular_values_`, `history_`."""

    SPEC = PURESVD_SPEC
    rank: int
    oversample: int
    power_iter: int
    seed: int
    num_workers: int
    item_factors_: np.ndarray
    user_factors_: np.ndarray
    singular_values_: np.ndarray
    history_: list[dict[str, Any]]

    def fit(self, interactions: Any, items: Any = None, values: Any = None, *,
            user_col: str = "user", item_col: str = "item",
            value_col: str | None = None) -> "LocalPureSVD":
        """Fit on interactions: a users × items matrix, (users, items[, values]) columns,
        a list of (user, item[, value]) rows or a DataFrame (columns user_col, item_col
        and value_col), with any hashable ids (`models.ids`). Without values the data is
        implicit: every pair seen is a 1 (seen twice, still 1); values at one pair add
        up."""
        self._validate()
        if items is not None:
            interactions = (interactions, items) + (() if values is None else (values,))
        data = self._read(interactions, False, "fit", user_col=user_col, item_col=item_col,
                          value_col=value_col)
        if data.users.size == 0:
            raise ConfigError("fit: there are no interactions to train on")
        implicit = data.values is None
        R = sp.csr_matrix((np.ones(data.users.size) if implicit else data.values,
                           (data.users, data.items)), shape=data.shape)
        R.sum_duplicates()
        if implicit:
            R.data[:] = 1.0
        width(self.rank, self.oversample, R.shape, "rank")
        svd = LocalRandomizedSVD(
            k=self.rank, oversample=self.oversample, power_iter=self.power_iter,
            seed=self.seed, compute_left_singular_vectors=False, num_workers=self.num_workers,
            master=self.master, num_shards=self.num_shards, show_progress=self.show_progress,
            callback=self.callback).fit(R)
        assert svd.components_ is not None  # compute_right_singular_vectors
        self.item_factors_ = svd.components_.T.copy()
        self.user_factors_ = np.asarray(R @ self.item_factors_)
        self.singular_values_, self.history_ = svd.singular_values_, svd.history_
        self.train_ = R.astype(np.float32)
        self.train_.data[:] = 1.0
        self.ids_ = data.ids
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "item_factors_"):
            raise ConfigError("this LocalPureSVD is not fitted yet; call fit() or load()")

    def _shape(self) -> tuple[int, int]:
        return self.user_factors_.shape[0], self.item_factors_.shape[0]

    def _user_side(self, rows  # type: ignore[override]  # no side inputs
                   ) -> tuple[np.ndarray, None]:
        return self.user_factors_[rows], None

    def _item_side(self) -> tuple[np.ndarray, np.ndarray]:
        return self.item_factors_, np.zeros(self.item_factors_.shape[0])

    def save(self, path: str | Path) -> None:
        """Factors, singular values, hyper-parameters, ids and training pairs in one .npz."""
        self._fitted()
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, user_factors=self.user_factors_, item_factors=self.item_factors_,
                     singular_values=self.singular_values_,
                     params=np.array(json.dumps(self.get_params())),
                     history=np.array(json.dumps(self.history_)), **self._held_arrays())

    @classmethod
    def load(cls, path: str | Path) -> "LocalPureSVD":
        with np.load(Path(path), allow_pickle=False) as f:
            model = cls(**json.loads(str(f["params"])))
            model.user_factors_, model.item_factors_ = f["user_factors"], f["item_factors"]
            model.singular_values_ = f["singular_values"]
            model.history_ = json.loads(str(f["history"]))
            model._restore_held(f)
        return model
