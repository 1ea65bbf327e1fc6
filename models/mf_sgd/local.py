"""`LocalMFSGD`: matrix factorization of explicit ratings by SGD on the parameter server,
from plain Python, Surprise-style.

    model = LocalMFSGD(rank=50, epochs=20).fit((users, items, ratings), valid=(vu, vi, vr))
    model.predict(users, items); ids, scores = model.recommend(["ann", "bob"], k=10)

r(u, i) ≈ μ + b_u + b_i + ⟨w_u, h_i⟩. The item side (H, b_i) lives on the parameter
server; `num_workers` workers in this process (threads running GIL-free kernels, the
Spark executors' role) each own the ratings of one contiguous block of users and those
users' factors. `schedule="rotation"` (Harp-DAAL's model rotation): the items are
cut into num_workers blocks and in sub-epoch s worker w trains block (w + s) mod
num_workers, one pull and one push per block, so the result equals a sequential SGD;
`schedule="async"`: Hogwild-like mini-batches with deltas pushed (add). After `fit` the
parameters are in the estimator: predict, recommend, save and load need no parameter
server.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from psframework import AsyncClient, ConfigError
from models.mf_sgd.kernels import squared_errors
from models.mf_sgd.spec import SPEC
from models.mf_sgd.worker import Worker, block_edges, pull_item_side, push_item_side
from models.ids import IdMap, interactions as read_interactions
from models.recommender import LocalRecommender

__all__ = ["LocalMFSGD"]



def interactions_like(valid, ids: IdMap, user_col: str, item_col: str, value_col: str):
    """Validation ratings as rows of the fitted map (-1 for ids fit has not seen)."""
    v = read_interactions(valid, user_col=user_col, item_col=item_col,
                          value_col=value_col, what="valid")
    if v.values is None:
        raise ConfigError("valid needs a rating per interaction: (users, items, ratings)")
    v.users = ids.user_index(v.ids.user_ids(v.users), strict=False)
    v.items = ids.item_index(v.ids.item_ids(v.items), strict=False)
    return v


class LocalMFSGD(LocalRecommender):
    """Hyper-parameters (keyword-only; defaults, ranges and docs in
    `models.mf_sgd.spec`, listed by `help(LocalMFSGD.__init__)`): rank, epochs,
    step_size, reg, biases, schedule, num_workers, batch_size, concurrent_batches, decay,
    init_std, seed, master, num_shards. callback(epoch, entry) after every epoch, with
    the entry appended to `history_` (epoch, train_rmse, valid_rmse, seconds, updates)."""

    SPEC = SPEC
    # the hyper-parameters, set from SPEC by LocalEstimator.__init__ (tests/test_local_api.py
    # checks these annotations against SPEC.local)
    rank: int
    epochs: int
    step_size: float
    reg: float
    biases: bool
    schedule: str
    num_workers: int
    batch_size: int
    concurrent_batches: int
    decay: float
    init_std: float
    seed: int
    # fitted state (absent until fit or load)
    user_factors_: np.ndarray
    item_factors_: np.ndarray
    user_bias_: np.ndarray
    item_bias_: np.ndarray
    global_mean_: float
    history_: list[dict[str, Any]]

    # -- training ------------------------------------------------------------------------
    def fit(self, interactions, items=None, ratings=None, *, valid=None,
            user_col: str = "user", item_col: str = "item",
            value_col: str = "rating") -> "LocalMFSGD":
        """Train afresh on ratings: (users, items, ratings) columns, a list of (user, item,
        rating) rows, a users × items matrix of them or a DataFrame (columns user_col,
        item_col, value_col), with any hashable ids (`models.ids`); fit(users, items,
        ratings) is the same as fit((users, items, ratings)). `valid`: ratings in any of
        these forms, scored after every epoch (pairs fit has not seen are predicted from
        μ and the known biases, as Surprise does)."""
        self._validate()
        if items is not None or ratings is not None:
            interactions = (interactions, items, ratings)
        data = self._read(interactions, False, "fit", user_col=user_col, item_col=item_col,
                          value_col=value_col)
        if data.values is None:
            raise ConfigError("fit needs a rating per interaction: (users, items, ratings)")
        if data.users.size == 0:
            raise ConfigError("fit: there are no ratings to train on")
        if valid is not None:
            v = interactions_like(valid, data.ids, user_col, item_col, value_col)
            valid = (v.users, v.items, v.values)
        users, items, ratings = data.users, data.items, data.values
        n_users, n_items = data.shape
        self.global_mean_ = float(ratings.mean()) if self.biases else 0.0
        rng = np.random.default_rng(self.seed)
        self.user_factors_ = rng.normal(0, self.init_std, (n_users, self.rank)).astype(np.float32)
        start = rng.normal(0, self.init_std, (n_items, self.rank)).astype(np.float32)
        self.user_bias_ = np.zeros(n_users, np.float32)
        self.history_ = []
        self._on_cluster(lambda master: self._fit(master, users, items, ratings, valid, start))
        self.train_ = sp.csr_matrix((np.ones(users.size, np.float32), (users, items)),
                                    shape=(n_users, n_items))
        self.train_.data[:] = 1.0
        self.ids_ = data.ids
        return self

    async def _fit(self, master: str, users, items, ratings, valid, start) -> None:
        name = f"mf_sgd-{uuid.uuid4().hex[:12]}"
        n_items = start.shape[0]
        async with AsyncClient(master) as client:
            await client.create_model(name, "mf_sgd", {"n_items": n_items, "rank": self.rank,
                                                       "schedule": self.schedule})
            try:
                every = np.arange(n_items)
                await push_item_side(client, name, every, start, np.zeros(n_items, np.float32))
                edges = block_edges(self.user_factors_.shape[0], self.num_workers)
                item_blocks = block_edges(n_items, self.num_workers)
                workers = [Worker(client, name, w, users[mine], items[mine], ratings[mine],
                                  self.user_factors_, self.user_bias_, mu=self.global_mean_,
                                  reg=self.reg, biases=self.biases, seed=self.seed,
                                  edges=item_blocks if self.schedule == "rotation" else None)
                           for w in range(self.num_workers)
                           for mine in [np.flatnonzero((users >= edges[w])
                                                       & (users < edges[w + 1]))]]
                await self._epochs(client, name, workers, (users, items, ratings), valid)
                self.item_factors_, self.item_bias_ = await pull_item_side(client, name, every)
            finally:
                await client.destroy(name)

    async def _epoch(self, workers: list[Worker], epoch: int) -> tuple[float, int]:
        lr = self.step_size * self.decay ** epoch
        if self.schedule == "rotation":
            done = []
            for s in range(len(workers)):  # sub-epochs, with a barrier between them
                done += await asyncio.gather(*(w.sub_epoch(epoch, s, lr) for w in workers))
        else:
            done = await asyncio.gather(*(w.batches(epoch, lr, self.batch_size,
                                                    self.concurrent_batches)
                                          for w in workers))
        return sum(sse for sse, _ in done), sum(n for _, n in done)

    async def _epochs(self, client: AsyncClient, name: str, workers: list[Worker],
                      train: tuple, valid) -> None:
        n_items = int(train[1].max()) + 1
        every = np.arange(n_items)
        bar = self._bar(self.epochs * train[0].size, "ratings", "mf_sgd")
        started = time.perf_counter()
        try:
            for epoch in range(self.epochs):
                began = time.perf_counter()
                _, updates = await self._epoch(workers, epoch)
                H, bi = await pull_item_side(client, name, every)
                sse = sum(await asyncio.gather(*(w.squared_errors(H, bi) for w in workers)))
                train_rmse = float(np.sqrt(sse / train[0].size))
                valid_rmse = None if valid is None else self._rmse(valid, H, bi)
                seconds = time.perf_counter() - began
                entry = {"epoch": epoch, "train_rmse": train_rmse, "valid_rmse": valid_rmse,
                         "seconds": seconds, "updates": updates}
                self.history_.append(entry)
                await client.report(name, epoch=epoch + 1, train_rmse=train_rmse,
                                    updates_per_s=updates / max(seconds, 1e-9))
                if bar is not None:
                    bar.update(updates)
                    rate = sum(h["updates"] for h in self.history_) / (
                        time.perf_counter() - started)
                    bar.set_postfix(train_rmse=f"{train_rmse:.4f}",
                                    valid_rmse="-" if valid_rmse is None else
                                    f"{valid_rmse:.4f}", updates_s=f"{rate:,.0f}")
                if self.callback is not None:
                    self.callback(epoch, entry)
        finally:
            if bar is not None:
                bar.close()

    def _rmse(self, ratings: tuple, H: np.ndarray, bi: np.ndarray) -> float:
        """RMSE over (users, items, ratings) with these item parameters; pairs with an
        unknown user or item are predicted as `predict` does."""
        users, items, r = ratings
        known = (users >= 0) & (items >= 0)
        sse = squared_errors(users[known], items[known], r[known], self.user_factors_,
                             self.user_bias_, H, bi, self.global_mean_, self.biases)
        if not known.all():
            rest = ~known
            sse += float(((r[rest] - self._fallback(users[rest], items[rest], bi)) ** 2).sum())
        return float(np.sqrt(sse / max(users.size, 1)))

    # -- scoring -------------------------------------------------------------------------
    def _fitted(self) -> None:
        if not hasattr(self, "item_factors_"):
            raise ConfigError("this LocalMFSGD is not fitted yet; call fit() or load()")

    def _shape(self) -> tuple[int, int]:
        return self.user_factors_.shape[0], self.item_factors_.shape[0]

    # no side inputs (LocalRecommender's **side): the override narrows them on purpose,
    # so that any keyword is a TypeError
    def _user_side(self, rows  # type: ignore[override]
                   ) -> tuple[np.ndarray, np.ndarray]:
        return (self.user_factors_[rows],
                self.user_bias_[rows].astype(np.float64) + self.global_mean_)

    def _item_side(self) -> tuple[np.ndarray, np.ndarray]:
        return self.item_factors_, self.item_bias_

    def _fallback(self, users: np.ndarray, items: np.ndarray, bi: np.ndarray) -> np.ndarray:
        """μ plus whichever biases are known (rows -1: unknown; Surprise's rule)."""
        out = np.full(users.size, self.global_mean_)
        if self.biases:
            ku, ki = users >= 0, items >= 0
            out[ku] += self.user_bias_[users[ku]]
            out[ki] += bi[items[ki]]
        return out

    def predict(self, users, items) -> np.ndarray:  # type: ignore[override]  # no side
        """The rating predicted for each (users[t], items[t]) (ids); an id fit did not
        see gets μ plus the biases that are known, as Surprise does (recommend and
        similar_* raise UnknownIdError instead)."""
        self._fitted()
        rows = self.ids.user_index(users, strict=False)
        columns = self.ids.item_index(items, strict=False)
        if rows.shape != columns.shape:
            raise ConfigError(f"predict: users and items must have one length, got "
                              f"{rows.size} and {columns.size}")
        out = self._fallback(rows, columns, self.item_bias_)
        known = np.flatnonzero((rows >= 0) & (columns >= 0))
        out[known] += np.einsum("nd,nd->n", self.user_factors_[rows[known]].astype(np.float64),
                                self.item_factors_[columns[known]].astype(np.float64))
        return out

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Parameters, hyper-parameters and the rated pairs (if it holds them) in one
        .npz file."""
        self._fitted()
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, user_factors=self.user_factors_, item_factors=self.item_factors_,
                     user_bias=self.user_bias_, item_bias=self.item_bias_,
                     global_mean=np.array(self.global_mean_),
                     params=np.array(json.dumps(self.get_params())),
                     history=np.array(json.dumps(self.history_)), **self._held_arrays())

    @classmethod
    def load(cls, path: str | Path) -> "LocalMFSGD":
        with np.load(Path(path), allow_pickle=False) as f:
            model = cls(**json.loads(str(f["params"])))
            model.user_factors_, model.item_factors_ = f["user_factors"], f["item_factors"]
            model.user_bias_, model.item_bias_ = f["user_bias"], f["item_bias"]
            model.global_mean_ = float(f["global_mean"])
            model.history_ = json.loads(str(f["history"]))
            model._restore_held(f)
        return model
