"""The recommenders' local API (LocalFMPair, LocalMFSGD), one for all (implicit's
`RecommenderBase` is the reference): ids in, ids out, one `recommend` signature.

    ids, scores = model.recommend(["ann", "bob"], k=10)        # item ids, best first
    model.recommend_users(["x"], k=5); model.similar_items(["x"], k=5)
    model.predict(["ann"], ["x"])

Ids are the caller's, any hashable values, mapped to the model's rows by its `IdMap`
(`ids_`, made by fit: `models.ids`); an id fit did not see raises `UnknownIdError`
naming it. A model supplies only its representations: `_user_side(rows, **side)` and
`_item_side()`, each (vectors, bias), where score(u, i) = ⟨user u, item i⟩ + user bias +
item bias, and `_shape()`. Scoring is `models.recommend.top_k` (bounded memory); ranks
break ties by the lower row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from psframework import ConfigError
from models.ids import IdMap, UnknownIdError, interactions
from models.local_estimator import LocalEstimator
from models.recommend import top_k

__all__ = ["LocalRecommender"]


class LocalRecommender(LocalEstimator):
    """Recommend, find similar users and items, and predict in the caller's ids.

    After fit: `ids_` (the IdMap) and `train_` (users × items CSR over rows, the pairs
    seen in training; None when the model holds none, e.g. built by a Spark estimator)."""

    ids_: IdMap | None = None
    train_: sp.csr_matrix | None = None

    # -- what a model supplies -------------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        """(users, items) the model has rows for."""
        raise NotImplementedError

    def _user_side(self, rows: np.ndarray, **side: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """The users' vectors and biases (None: no user bias)."""
        raise NotImplementedError

    def _item_side(self) -> tuple[np.ndarray, np.ndarray]:
        """Every item's vector and bias."""
        raise NotImplementedError

    def _fitted(self) -> None:
        raise NotImplementedError

    # -- ids -------------------------------------------------------------------------------
    @property
    def ids(self) -> IdMap:
        """The id map (the identity of the model's shape when it holds none: ids are rows)."""
        self._fitted()
        return self.ids_ if self.ids_ is not None else IdMap.identity(*self._shape())

    def _read(self, data: Any, partial: bool, what: str, **columns: Any):
        """`data` (any form `models.ids.interactions` takes) as indices: by a fresh map for
        fit, by the fitted one for fit_partial (whose new ids are an UnknownIdError saying
        that fit_partial continues the fitted users and items)."""
        if not partial:
            return interactions(data, what=what, **columns)
        try:
            return interactions(data, self.ids, what=what, **columns)
        except UnknownIdError as e:
            raise UnknownIdError(e.kind, e.ids, self.ids.n_users if e.kind == "user" else
                                 self.ids.n_items, fix="fit_partial continues training the "
                                 "fitted users and items; fit() anew to add others") from None

    def _rows(self, users: Any) -> np.ndarray:
        return np.arange(self._shape()[0]) if users is None else self.ids.user_index(users)

    def _columns(self, items: Any) -> np.ndarray:
        return np.arange(self._shape()[1]) if items is None else self.ids.item_index(items)

    # -- persistence -----------------------------------------------------------------------
    def _held_arrays(self) -> dict[str, Any]:
        """What save keeps of the ids and the training pairs, when fit gave them."""
        held: dict[str, Any] = {}
        if self.ids_ is not None:
            held["ids"] = self.ids_.to_array()
        if self.train_ is not None:
            held.update(train_indptr=self.train_.indptr, train_indices=self.train_.indices)
        return held

    def _restore_held(self, saved: Any) -> None:
        """The ids and training pairs back from `_held_arrays`'s keys of a loaded .npz
        (None where it holds none); after the parameters, so that `_shape` is known."""
        self.train_ = None
        if "train_indices" in saved:
            indices = saved["train_indices"]
            self.train_ = sp.csr_matrix((np.ones(indices.size, np.float32), indices,
                                         saved["train_indptr"]), shape=self._shape())
        self.ids_ = IdMap.from_array(saved["ids"]) if "ids" in saved else None

    # -- scoring ---------------------------------------------------------------------------
    def _top_k(self, queries, targets, k: int, unit: str, **kwargs
               ) -> tuple[np.ndarray, np.ndarray]:
        """`models.recommend.top_k`, with a bar over the queries when show_progress."""
        bar = self._bar(len(queries), unit, "recommend")
        try:
            return top_k(queries, targets, k, on_block=bar.update if bar else None, **kwargs)
        finally:
            if bar is not None:
                bar.close()

    def predict(self, users, items, **side: Any) -> np.ndarray:
        """score(users[t], items[t]) for each t (ids; UnknownIdError for unknown ones)."""
        self._fitted()
        rows, columns = self.ids.user_index(users), self.ids.item_index(items)
        if rows.shape != columns.shape:
            raise ConfigError(f"predict: users and items must have one length, got "
                              f"{rows.size} and {columns.size}")
        queries, user_bias = self._user_side(rows, **side)
        vectors, bias = self._item_side()
        out = np.einsum("nd,nd->n", np.asarray(queries, np.float64),
                        vectors[columns].astype(np.float64)) + bias[columns]
        return out if user_bias is None else out + user_bias

    def recommend(self, users=None, k: int = 10, *, filter_seen: bool = True,
                  filter_items=None, exclude=None, items=None, **side: Any
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The top-k items for each of `users` (ids; default every user): (item ids,
        scores), both len(users) × k, best first (ties: the lower row first).

        filter_seen: leave out each user's training items. filter_items: item ids left
        out for everyone. exclude: per user, items left out: a len(users) × items sparse
        matrix over item rows (`ids.item_index`), or one collection of item ids per user.
        items: rank only these item ids. Unknown ids anywhere raise UnknownIdError
        naming them. Left-out items
        score -inf: they come last, only when fewer than k others remain."""
        self._fitted()
        rows = self._rows(users)
        queries, user_bias = self._user_side(rows, **side)
        vectors, bias = self._item_side()
        skip = self._left_out(rows, filter_seen, exclude)
        if filter_items is not None:
            out = self.ids.item_index(filter_items)
            bias = bias.astype(np.float32, copy=True)
            bias[out] = -np.inf  # left out for everyone, at no cost per user
        candidates = None
        if items is not None:
            candidates = np.unique(self.ids.item_index(items))
            vectors, bias = vectors[candidates], bias[candidates]
            skip = None if skip is None else skip[:, candidates]
        top, scores = self._top_k(queries, vectors, k, "users", target_bias=bias,
                                  query_bias=user_bias, exclude=skip)
        return self.ids.item_ids(top if candidates is None else candidates[top]), scores

    def recommend_users(self, items=None, k: int = 10, *, filter_seen: bool = True
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The top-k users for each of `items` (ids; default every item), scored as
        `predict` does: (user ids, scores), both len(items) × k, best first. filter_seen
        leaves out the users who had the item in training."""
        self._fitted()
        columns = self._columns(items)
        vectors, bias = self._item_side()
        users, user_bias = self._user_side(np.arange(self._shape()[0]))
        skip = None
        if filter_seen:
            skip = self._seen().T.tocsr()[columns]
        top, scores = self._top_k(vectors[columns], users, k, "items", query_bias=bias[columns],
                                  target_bias=user_bias, exclude=skip)
        return self.ids.user_ids(top), scores

    def similar_items(self, items, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k items most similar to each of `items` (ids): (item ids, cosine
        similarities of the items' learned vectors), both len(items) × k, best first;
        the item itself is left out."""
        self._fitted()
        columns = self.ids.item_index(items)
        ids, scores = self._similar(self._item_side()[0], columns, k)
        return self.ids.item_ids(ids), scores

    def similar_users(self, users, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k users most similar to each of `users` (ids), as similar_items: cosine
        similarities of the users' learned vectors, the user itself left out."""
        self._fitted()
        rows = self.ids.user_index(users)
        vectors = self._user_side(np.arange(self._shape()[0]))[0]
        ids, scores = self._similar(vectors, rows, k)
        return self.ids.user_ids(ids), scores

    def _similar(self, vectors: np.ndarray, rows: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine top-k among `vectors` for each of `rows`, each row itself left out (a
        zero vector is similar to nothing: 0)."""
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = np.asarray(vectors, np.float32) / np.maximum(norms, 1e-30).astype(np.float32)
        itself = sp.csr_matrix((np.ones(rows.size, np.float32), (np.arange(rows.size), rows)),
                               shape=(rows.size, vectors.shape[0]))
        return self._top_k(unit[rows], unit, min(k, max(vectors.shape[0] - 1, 1)), "rows",
                           exclude=itself)

    def _seen(self) -> sp.csr_matrix:
        if self.train_ is None:
            raise ConfigError("this model holds no training matrix to filter_seen by; pass "
                              "filter_seen=False (and the items to leave out as exclude)")
        return self.train_

    def _left_out(self, rows: np.ndarray, filter_seen: bool, exclude) -> sp.csr_matrix | None:
        """The items left out per user: its training items (filter_seen) and `exclude`."""
        skip = [self._seen()[rows]] if filter_seen else []
        if exclude is not None:
            if sp.issparse(exclude):
                exclude = sp.csr_matrix(exclude)
            else:
                if len(exclude) != rows.size:
                    raise ConfigError(f"exclude needs one collection of item ids per user "
                                      f"asked for ({rows.size}), got {len(exclude)}")
                per_user = [self.ids.item_index(list(e)) if len(e) else
                            np.zeros(0, np.int64) for e in exclude]
                exclude = sp.csr_matrix(
                    (np.ones(sum(e.size for e in per_user), np.float32),
                     np.concatenate(per_user or [np.zeros(0, np.int64)]),
                     np.concatenate([[0], np.cumsum([e.size for e in per_user])])),
                    shape=(rows.size, self._shape()[1]))
            if exclude.shape[0] != rows.size:
                raise ConfigError(f"exclude needs one row per user asked for ({rows.size}), "
                                  f"got {exclude.shape[0]}")
            skip.append(exclude)
        return sum(skip[1:], skip[0]).tocsr() if skip else None
