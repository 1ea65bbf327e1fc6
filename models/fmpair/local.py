"""`LocalFMPair`: train FMPair on the parameter server from plain Python, LightFM-style.

    model = LocalFMPair(dims=32, loss="warp", epochs=10).fit(train)   # matrix or ids
    ids, scores = model.recommend(["ann", "bob"], k=10)
    model.fit_partial(more, epochs=2)                                  # continue training

`fit` runs on the cluster at `master`, or by default on an embedded LocalCluster (its
servers threads of this process) that it starts and stops itself; afterwards the
parameters are pulled into the estimator, so `recommend`, `predict`, `similar_items`,
`save` and `load` need no parameter server. Which interactions are positives, and their
weights in the loss, is `models.fmpair.positives` (docs/fmpair.md, "Inputs").
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from psframework import AsyncClient, ConfigError
from models.fmpair.features import FeatureSpace
from models.fmpair.positives import positives
from models.fmpair.sampling import NegativeSampler
from models.fmpair.spec import SPEC
from models.fmpair.worker import EpochStats, Trainer
from models.ids import IdMap, Interactions
from models.recommender import LocalRecommender

__all__ = ["LocalFMPair"]


async def _assign(client: AsyncClient, name: str, table: str, rows: np.ndarray,
                  values: np.ndarray) -> None:
    """Set rows of an added-to table to `values` exactly: its initial values are taken
    away (x + (-x) is exactly 0), then `values` added."""
    await client.push_rows(name, table, rows, -await client.pull_rows(name, table, rows))
    await client.push_rows(name, table, rows, values)


def _state(model: "LocalFMPair") -> dict[str, Any]:
    """What save keeps beside the parameters, when the model has it: its ids, AdaGrad
    accumulators and random generator (for fit_partial)."""
    out = {name: getattr(model, name + "_") for name in ("factors_acc", "linear_acc")
           if getattr(model, name + "_", None) is not None}
    if model.ids_ is not None:
        out["ids"] = model.ids_.to_array()
    if getattr(model, "rng_state_", None) is not None:
        out["rng_state"] = np.array(json.dumps(model.rng_state_))
    return out


class LocalFMPair(LocalRecommender):
    """Pairwise factorization machine (the LightFM model) trained on the parameter server.

    Hyper-parameters (keyword-only; defaults, ranges and docs in `models.fmpair.spec`,
    listed by `help(LocalFMPair.__init__)`): dims, loss, sampler, rho, step_size,
    linear_reg, factors_reg, optimizer, epochs, batch_size, num_negatives,
    concurrent_batches, filter_seen, threshold, seed, master, num_shards.
    callback(epoch, elapsed_seconds, loss) is called after every epoch.
    """

    SPEC = SPEC
    # the hyper-parameters, set from SPEC by LocalEstimator.__init__ (tests/test_local_api.py
    # checks these annotations against SPEC.local)
    dims: int
    loss: str
    sampler: str
    rho: float
    step_size: float
    linear_reg: float
    factors_reg: float
    optimizer: str
    epochs: int
    batch_size: int
    num_negatives: int
    concurrent_batches: int
    filter_seen: bool
    threshold: float | None
    seed: int
    # fitted state (absent until fit or load)
    factors_: np.ndarray
    linear_: np.ndarray
    factors_acc_: np.ndarray
    linear_acc_: np.ndarray
    rng_state_: Mapping[str, Any]  # numpy's bit_generator.state
    space_: FeatureSpace
    history_: list[Any]  # EpochStats per epoch (dicts when the Spark FMPair trained it)

    # -- training ------------------------------------------------------------------------
    def fit(self, interactions, user_features=None, item_features=None,
            sampling_attribute=None, context_features=None, *, sample_weight=None,
            user_col: str = "user", item_col: str = "item",
            value_col: str | None = None) -> "LocalFMPair":
        """Train afresh on `interactions`: a users × items matrix, (users, items[,
        values]) columns, a list of (user, item[, value]) rows or a DataFrame (columns
        user_col, item_col and value_col), with any hashable ids (`models.ids`).
        Positives and their weights: `positives` (threshold, sample_weight).

        user_features / item_features: one row per user / item row (default: identity).
        sampling_attribute: one value per item row (e.g. artist); negatives sharing a value
        with any of the user's positives are rejected. context_features: one row per
        positive, in the row-major order of the training matrix (e.g. the previous item)."""
        self._validate()
        data = self._read(interactions, False, "fit", user_col=user_col, item_col=item_col,
                          value_col=value_col)
        train = self._positives(data, sample_weight, interactions)
        n_users, n_items = train.shape
        space = FeatureSpace.build(n_users, n_items, user_features, item_features,
                                   context_features, train.nnz)
        for name in ("factors_", "linear_", "factors_acc_", "linear_acc_", "rng_state_"):
            self.__dict__.pop(name, None)
        self.history_ = []
        self._train(space, train, sampling_attribute, self.epochs)
        self.space_, self.train_, self.ids_ = space, train, data.ids
        return self

    def fit_partial(self, interactions, epochs: int | None = None, *,
                    sampling_attribute=None, context_features=None, sample_weight=None,
                    user_col: str = "user", item_col: str = "item",
                    value_col: str | None = None) -> "LocalFMPair":
        """Continue training the fitted model on `interactions` (any form `fit` takes) for
        `epochs` (default: the epochs hyper-parameter): the factors, linear weights,
        AdaGrad accumulators and the random generator go on where they stopped, so
        fit(epochs=a) then fit_partial(same, epochs=b) trains as fit(epochs=a + b) does.
        The users and items must be ones fit saw (UnknownIdError otherwise; fit anew to
        add others); the features stay fit's."""
        self._fitted()
        self._validate()
        epochs = self.epochs if epochs is None else SPEC["epochs"].check(
            epochs, "fit_partial epochs")
        data = self._read(interactions, True, "fit_partial", user_col=user_col,
                          item_col=item_col, value_col=value_col)
        train = self._positives(data, sample_weight, interactions)
        old = self.space_
        n_users, n_items = train.shape
        space = FeatureSpace.build(n_users, n_items, old.user, old.item, context_features,
                                   train.nnz)
        if space.n_features != self.factors_.shape[0] or self.dims != self.factors_.shape[1]:
            raise ConfigError(f"fit_partial continues a model of {self.factors_.shape[0]} "
                              f"features × {self.factors_.shape[1]} dims; these inputs make "
                              f"{space.n_features} × {self.dims} (context_features, when "
                              f"fit had them, must have fit's width; dims must not change)")
        self._train(space, train, sampling_attribute, epochs)
        seen = train if self.train_ is None else self.train_ + train
        self.train_ = sp.csr_matrix(seen.astype(bool), dtype=np.float32)
        return self

    def _positives(self, data: Interactions, sample_weight: Any, raw: Any) -> sp.csr_matrix:
        import pandas as pd
        matrix = raw if sp.issparse(raw) or (isinstance(raw, np.ndarray) and raw.ndim == 2) \
            else None
        return positives(data, self.threshold, sample_weight, matrix,
                         raw if isinstance(raw, pd.DataFrame) else None)

    def _train(self, space: FeatureSpace, train: sp.csr_matrix, sampling_attribute,
               epochs: int) -> None:
        sampler = NegativeSampler(train, self.sampler, self.rho, self.filter_seen,
                                  sampling_attribute)
        done = getattr(self, "history_", [])  # none after load
        self.history_ = done + self._on_cluster(lambda master: self._fit(
            master, space, train, sampler, epochs, len(done)))

    async def _fit(self, master: str, space: FeatureSpace, train: sp.csr_matrix,
                   sampler: NegativeSampler, epochs: int, first: int) -> list[EpochStats]:
        name = f"fmpair-{uuid.uuid4().hex[:12]}"
        config = {"n_features": space.n_features, **SPEC.plugin_values(self.get_params())}
        tables = {"factors": "factors_", "linear": "linear_"}
        if self.optimizer == "adagrad":
            tables.update(factors_acc="factors_acc_", linear_acc="linear_acc_")
        async with AsyncClient(master) as client:
            await client.create_model(name, "fmpair", config)
            try:
                every = np.arange(space.n_features)
                for table, attr in tables.items():  # fit_partial: go on from here
                    if getattr(self, attr, None) is not None:
                        await _assign(client, name, table, every, getattr(self, attr))
                trainer = Trainer(client, name, space, train, sampler, loss=self.loss,
                                  batch_size=self.batch_size, num_negatives=self.num_negatives,
                                  concurrent_batches=self.concurrent_batches, seed=self.seed)
                if getattr(self, "rng_state_", None) is not None:
                    trainer.rng.bit_generator.state = self.rng_state_
                history = await self._epochs(trainer, train.nnz, epochs, first)
                self.rng_state_ = trainer.rng.bit_generator.state
                for table, attr in tables.items():
                    setattr(self, attr, await client.pull_rows(name, table, every))
            finally:
                await client.destroy(name)
        return history

    async def _epochs(self, trainer: Trainer, positives: int, epochs: int, first: int
                      ) -> list[EpochStats]:
        bar = self._bar(epochs * positives, "pairs", "fmpair")
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
            for epoch in range(first, first + epochs):
                seen.update(loss=0.0, counted=0)
                stats = await trainer.epoch(epoch, on_batch)
                history.append(stats)
                # the master shows them in `psframework status` and on its metrics endpoint
                await trainer.client.report(trainer.model, epoch=epoch + 1, loss=stats.loss,
                                            pairs_per_s=stats.pairs_per_second)
                if self.callback is not None:
                    self.callback(epoch, time.perf_counter() - started, stats.loss)
        finally:
            if bar is not None:
                bar.close()
        return history

    # -- scoring (rows; the caller's ids go through LocalRecommender) -------------------
    def _fitted(self) -> None:
        if not hasattr(self, "factors_"):
            raise ConfigError("this LocalFMPair is not fitted yet; call fit() or load()")

    def _shape(self) -> tuple[int, int]:
        return self.space_.n_users, self.space_.n_items

    # context is this model's one side input (LocalRecommender's **side): the override
    # narrows it on purpose, so that any other keyword is a TypeError
    def _user_side(self, rows, context=None  # type: ignore[override]
                   ) -> tuple[np.ndarray, None]:
        return self.user_representations(rows, context), None

    def _item_side(self) -> tuple[np.ndarray, np.ndarray]:
        return self.item_representations()

    def user_representations(self, users=None, context=None) -> np.ndarray:
        """Σ_g x_g v_g over each user's features, plus its row of `context` if given
        (len(users) × n_context_features, e.g. the item just played). users: rows
        (`ids.user_index(ids)`), default every user."""
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
        """(Σ_f x_f v_f, Σ_f x_f w_f) for every item row."""
        self._fitted()
        own = slice(self.space_.item_offset, None)
        item = self.space_.item
        return np.asarray(item @ self.factors_[own]), np.asarray(item @ self.linear_[own]).ravel()

    def predict(self, users, items, context=None  # type: ignore[override]  # as _user_side
                ) -> np.ndarray:
        """score(users[t], items[t]) for each t (ids; with context row t, if given)."""
        return super().predict(users, items, context=context)

    @staticmethod
    def pair_scores(reps: np.ndarray, items: np.ndarray, vectors: np.ndarray,
                    bias: np.ndarray) -> np.ndarray:
        """score(reps[i], item rows[i]) from item_representations() computed once
        (callers scoring many batches reuse them)."""
        return (reps * vectors[items]).sum(axis=1) + bias[items]

    def recommend(  # type: ignore[override]  # context is the side input, as _user_side
            self, users=None, k: int = 10, *, filter_seen: bool = True, filter_items=None,
            exclude=None, items=None, context=None) -> tuple[np.ndarray, np.ndarray]:
        """`LocalRecommender.recommend`, each user's representation with its row of
        `context` when given (len(users) × n_context_features)."""
        return super().recommend(users, k, filter_seen=filter_seen, filter_items=filter_items,
                                 exclude=exclude, items=items, context=context)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Parameters, feature space, ids, training matrix (if it holds one) and what
        fit_partial goes on from, in one .npz file (ids must be JSON's: str, int,
        float)."""
        self._fitted()
        space = self.space_
        context = space.context[:0] if space.context is not None else sp.csr_matrix((0, 0))
        mats = {"user": space.user, "item": space.item,
                "context": context}  # the context's width is what scoring needs
        if self.train_ is not None:
            mats["train"] = self.train_
        arrays: dict[str, Any] = {f"{n}_{part}": getattr(m, part) for n, m in mats.items()
                  for part in ("data", "indices", "indptr")}
        arrays.update({f"{n}_shape": np.array(m.shape) for n, m in mats.items()})
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, factors=self.factors_, linear=self.linear_,
                     params=np.array(json.dumps(self.get_params())),
                     **_state(self), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "LocalFMPair":
        with np.load(Path(path), allow_pickle=False) as f:
            model = cls(**json.loads(str(f["params"])))
            mats = {n: sp.csr_matrix((f[f"{n}_data"], f[f"{n}_indices"], f[f"{n}_indptr"]),
                                     shape=tuple(f[f"{n}_shape"]))
                    for n in ("user", "item", "train", "context") if f"{n}_shape" in f}
            model.factors_, model.linear_ = f["factors"], f["linear"]
            for name in ("factors_acc", "linear_acc"):
                if name in f:
                    setattr(model, name + "_", f[name])
            if "ids" in f:
                model.ids_ = IdMap.from_array(f["ids"])
            if "rng_state" in f:
                model.rng_state_ = json.loads(str(f["rng_state"]))
        context = mats["context"] if mats["context"].shape[1] else None
        model.space_ = FeatureSpace(mats["user"], mats["item"], context)
        model.train_ = mats.get("train")
        return model
