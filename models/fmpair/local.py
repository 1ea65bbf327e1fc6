"""`LocalFMPair`: train FMPair on the parameter server from plain Python, LightFM-style.

    model = LocalFMPair(dims=32, loss="warp", epochs=10).fit(train)
    ids, scores = model.recommend([0, 1, 2], k=10)

`fit` runs on the cluster at `master`, or by default on an embedded LocalCluster (its
servers threads of this process) that it starts and stops itself; afterwards the parameters are pulled into the estimator, so
`recommend`, `predict`, `save` and `load` need no parameter server.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from psframework import AsyncClient, ConfigError
from models.fmpair.features import FeatureSpace
from models.fmpair.sampling import NegativeSampler
from models.fmpair.spec import SPEC
from models.fmpair.worker import EpochStats, Trainer
from models.recommender import LocalRecommender

__all__ = ["LocalFMPair"]



class LocalFMPair(LocalRecommender):
    """Pairwise factorization machine (the LightFM model) trained on the parameter server.

    Hyper-parameters (keyword-only; defaults, ranges and docs in `models.fmpair.spec`,
    listed by `help(LocalFMPair.__init__)`): dims, loss, sampler, rho, step_size,
    linear_reg, factors_reg, optimizer, epochs, batch_size, num_negatives,
    concurrent_batches, filter_seen, threshold, seed, master, num_shards.
    callback(epoch, elapsed_seconds, loss) is called after every epoch.
    """

    SPEC = SPEC

    # -- training ------------------------------------------------------------------------
    def fit(self, interactions, user_features=None, item_features=None,
            sampling_attribute=None, context_features=None) -> "LocalFMPair":
        """Train on a users × items matrix of positives (any nonzero is a positive).

        user_features / item_features: one row per user / item (default: identity).
        sampling_attribute: one value per item (e.g. artist); negatives sharing a value
        with any of the user's positives are rejected. context_features: one row per
        positive, in the row-major order of `interactions` (e.g. the previous item)."""
        self._validate()
        train = sp.csr_matrix(interactions, dtype=np.float32)
        train.data[:] = 1.0
        train.eliminate_zeros()
        if train.nnz == 0:
            raise ConfigError("interactions has no positives to train on")
        space = FeatureSpace.build(*train.shape, user_features, item_features,
                                   context_features, train.nnz)
        sampler = NegativeSampler(train, self.sampler, self.rho, self.filter_seen,
                                  sampling_attribute)
        self.history_ = self._on_cluster(lambda master: self._fit(master, space, train,
                                                                   sampler))
        self.space_, self.train_ = space, train
        return self

    async def _fit(self, master: str, space: FeatureSpace, train: sp.csr_matrix,
                   sampler: NegativeSampler) -> list[EpochStats]:
        name = f"fmpair-{uuid.uuid4().hex[:12]}"
        config = {"n_features": space.n_features, **SPEC.plugin_values(self.get_params())}
        async with AsyncClient(master) as client:
            await client.create_model(name, "fmpair", config)
            try:
                trainer = Trainer(client, name, space, train, sampler, loss=self.loss,
                                  batch_size=self.batch_size, num_negatives=self.num_negatives,
                                  concurrent_batches=self.concurrent_batches, seed=self.seed)
                history = await self._epochs(trainer, train.nnz)
                every = np.arange(space.n_features)
                self.factors_ = await client.pull_rows(name, "factors", every)
                self.linear_ = await client.pull_rows(name, "linear", every)
            finally:
                await client.destroy(name)
        return history

    async def _epochs(self, trainer: Trainer, positives: int) -> list[EpochStats]:
        bar = self._bar(self.epochs * positives, "pairs", "fmpair")
        history = []
        started = time.perf_counter()
        seen = {"pairs": 0, "loss": 0.0, "counted": 0}

        def on_batch(size: int, total: float, counted: int) -> None:
            seen["pairs"] += size
            seen["loss"] += total
            seen["counted"] += counted
            if bar is not None:
                bar.update(size)
                rate = seen["pairs"] / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{seen['loss'] / max(seen['counted'], 1):.4f}",
                                pairs_s=f"{rate:,.0f}", refresh=False)
        try:
            for epoch in range(self.epochs):
                seen.update(loss=0.0, counted=0)
                stats = await trainer.epoch(epoch, on_batch)
                history.append(stats)
                if self.callback is not None:
                    self.callback(epoch, time.perf_counter() - started, stats.loss)
        finally:
            if bar is not None:
                bar.close()
        return history

    # -- scoring -------------------------------------------------------------------------
    def _fitted(self) -> None:
        if not hasattr(self, "factors_"):
            raise ConfigError("this LocalFMPair is not fitted yet; call fit() or load()")

    def user_representations(self, users=None, context=None) -> np.ndarray:
        """Σ_g x_g v_g over each user's features, plus its row of `context` if given
        (len(users) × n_context_features, e.g. the item just played)."""
        self._fitted()
        space = self.space_
        u = space.user if users is None else space.user[np.asarray(users)]
        reps = np.asarray(u @ self.factors_[: space.n_user_features])
        if context is not None:
            context = sp.csr_matrix(context, dtype=np.float32)
            if context.shape != (reps.shape[0], space.n_context_features):
                raise ConfigError(f"context must be {reps.shape[0]} × "
                                  f"{space.n_context_features}, got {context.shape}")
            reps = reps + context @ self.factors_[space.n_user_features:space.item_offset]
        return reps

    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(Σ_f x_f v_f, Σ_f x_f w_f) for every item."""
        self._fitted()
        own = slice(self.space_.item_offset, None)
        item = self.space_.item
        return np.asarray(item @ self.factors_[own]), np.asarray(item @ self.linear_[own]).ravel()

    def predict(self, users, items, context=None) -> np.ndarray:
        """score(users[i], items[i]) for each i (with context row i, if given)."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        if users.shape != items.shape:
            raise ConfigError("users and items must have the same length")
        return self.pair_scores(self.user_representations(users, context), items,
                                *self.item_representations())

    @staticmethod
    def pair_scores(reps: np.ndarray, items: np.ndarray, vectors: np.ndarray,
                    bias: np.ndarray) -> np.ndarray:
        """score(reps[i], items[i]) from item_representations() computed once (callers
        scoring many batches reuse them)."""
        return (reps * vectors[items]).sum(axis=1) + bias[items]

    def recommend(self, users=None, k: int = 10, filter_seen: bool = True, context=None,
                  exclude=None, filter_items=None) -> tuple[np.ndarray, np.ndarray]:
        """The top-k items for each user (default: every user): (ids, scores), both
        len(users) × k, best first, equal scores by lower item id. filter_seen leaves out
        the user's training items, `exclude` (len(users) × items, sparse) further items per
        user and `filter_items` (item ids) items for everyone. Left-out items score -inf
        (they come last, only when fewer than k others remain). Scored in blocks of
        bounded memory (`models.recommend.top_k`)."""
        self._fitted()
        n_users, n_items = self.space_.n_users, self.space_.n_items
        users = np.arange(n_users) if users is None else np.atleast_1d(
            np.asarray(users, np.int64))
        vectors, bias = self.item_representations()
        skip = self._left_out(users, filter_seen, exclude, self.train_)
        if filter_items is not None:
            items = np.unique(np.asarray(filter_items, np.int64))
            if items.size and (items[0] < 0 or items[-1] >= n_items):
                raise ConfigError(f"filter_items must be item ids in [0, {n_items})")
            bias = bias.copy()
            bias[items] = -np.inf  # left out for everyone, at no cost per user
        return self._top_k(self.user_representations(users, context), vectors, k,
                           target_bias=bias, exclude=skip, unit="users")

    def recommend_users(self, items=None, k: int = 10, filter_seen: bool = True
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The top-k users for each item (default: every item), scored as `predict` does
        (without context): (user ids, scores), both len(items) × k, best first.
        filter_seen leaves out the users who had the item in training."""
        self._fitted()
        items = np.arange(self.space_.n_items) if items is None else np.atleast_1d(
            np.asarray(items, np.int64))
        vectors, bias = self.item_representations()
        train = None if self.train_ is None else self.train_.T.tocsr()
        skip = self._left_out(items, filter_seen, None, train)
        return self._top_k(vectors[items], self.user_representations(), k,
                           query_bias=bias[items], exclude=skip, unit="items")

    @staticmethod
    def _left_out(rows: np.ndarray, filter_seen: bool, exclude, train) -> sp.csr_matrix | None:
        skip = []
        if filter_seen:
            if train is None:
                raise ConfigError("this model holds no training matrix to filter_seen by; "
                                  "pass filter_seen=False and the items to leave out as exclude")
            skip.append(train[rows])
        if exclude is not None:
            exclude = sp.csr_matrix(exclude)
            if exclude.shape[0] != rows.size:
                raise ConfigError(f"exclude needs one row per user asked for ({rows.size}), "
                                  f"got {exclude.shape[0]}")
            skip.append(exclude)
        return sum(skip[1:], skip[0]).tocsr() if skip else None

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Parameters, feature space and training matrix (if it holds one) in one .npz
        file."""
        self._fitted()
        space = self.space_
        context = space.context[:0] if space.context is not None else sp.csr_matrix((0, 0))
        mats = {"user": space.user, "item": space.item,
                "context": context}  # the context's width is what scoring needs
        if self.train_ is not None:
            mats["train"] = self.train_
        arrays = {f"{n}_{part}": getattr(m, part) for n, m in mats.items()
                  for part in ("data", "indices", "indptr")}
        arrays.update({f"{n}_shape": np.array(m.shape) for n, m in mats.items()})
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, factors=self.factors_, linear=self.linear_,
                     params=np.array(json.dumps(self.get_params())), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "LocalFMPair":
        with np.load(Path(path), allow_pickle=False) as f:
            model = cls(**json.loads(str(f["params"])))
            mats = {n: sp.csr_matrix((f[f"{n}_data"], f[f"{n}_indices"], f[f"{n}_indptr"]),
                                     shape=tuple(f[f"{n}_shape"]))
                    for n in ("user", "item", "train", "context") if f"{n}_shape" in f}
            model.factors_, model.linear_ = f["factors"], f["linear"]
        context = mats["context"] if mats["context"].shape[1] else None
        model.space_ = FeatureSpace(mats["user"], mats["item"], context)
        model.train_ = mats.get("train")
        return model
