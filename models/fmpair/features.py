"""The feature space: user, context and item features in one index space.

Layout: user features first, then context features, then item features, so user
feature g is feature g, context feature c is `n_user_features + c` and item feature f
is `item_offset + f`. Without side features a user is its own one-hot feature and so
is an item (LightFM's default); given side features, include the identity columns too
if you want them. Context features describe one interaction rather than the user (e.g.
the previous item, weighted): one row per training positive, in the row-major order
of the interaction matrix; they join the user's bag for that positive.
A *bag* batch is the CSR triple (indptr int32, indices int32, weights float32); on the
wire a batch of one-hot bags is just its indices (see `compact`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from psframework import ConfigError

__all__ = ["FeatureSpace", "Bags", "concat_bags", "compact", "MAX_FEATURES"]

MAX_FEATURES = 2**31 - 1  # feature ids travel as int32

Bags = tuple[np.ndarray, np.ndarray, np.ndarray]


def _csr(m, rows: int | None, what: str, default_identity: int | None = None):
    if m is None:
        return None if default_identity is None else sp.identity(default_identity,
                                                                 dtype=np.float32, format="csr")
    m = sp.csr_matrix(m, dtype=np.float32)
    if rows is not None and m.shape[0] != rows:
        raise ConfigError(f"{what} has {m.shape[0]} rows, expected {rows}")
    m.sort_indices()
    return m


@dataclass(frozen=True)
class FeatureSpace:
    user: sp.csr_matrix  # n_users × n_user_features
    item: sp.csr_matrix  # n_items × n_item_features
    context: sp.csr_matrix | None = None  # one row per training positive × n_context_features

    def __post_init__(self) -> None:
        if self.n_features > MAX_FEATURES:
            raise ConfigError(f"{self.n_features} features exceed the {MAX_FEATURES} a model "
                              "can address")

    @classmethod
    def build(cls, n_users: int, n_items: int, user_features=None, item_features=None,
              context_features=None, n_positives: int | None = None) -> "FeatureSpace":
        return cls(_csr(user_features, n_users, "user_features (one row per user)", n_users),
                   _csr(item_features, n_items, "item_features (one row per item)", n_items),
                   _csr(context_features, n_positives,
                        "context_features (one row per training positive)"))

    @property
    def n_users(self) -> int:
        return self.user.shape[0]

    @property
    def n_items(self) -> int:
        return self.item.shape[0]

    @property
    def n_user_features(self) -> int:
        return self.user.shape[1]

    @property
    def n_context_features(self) -> int:
        return 0 if self.context is None else self.context.shape[1]

    @property
    def item_offset(self) -> int:
        return self.n_user_features + self.n_context_features

    @property
    def n_features(self) -> int:
        return self.item_offset + self.item.shape[1]

    @cached_property
    def _identity(self) -> tuple[bool, bool]:
        """Whether users / items are plain one-hot identities (the fast path for bags)."""
        def plain(m: sp.csr_matrix) -> bool:
            n = m.shape[0]
            return (m.shape == (n, n) and m.nnz == n and np.array_equal(m.indices, np.arange(n))
                    and bool((m.data == 1).all()))
        return plain(self.user), plain(self.item)

    def user_bags(self, users: np.ndarray, positives: np.ndarray | None = None) -> Bags:
        """User bags, each with the context of its positive when there is context."""
        if self._identity[0] and (self.context is None or positives is None):
            return _one_hot(users, 0)
        rows = self.user[np.asarray(users, dtype=np.int64)]
        if self.context is not None and positives is not None:
            rows = sp.hstack([rows, self.context[np.asarray(positives, dtype=np.int64)]],
                             format="csr")
        return _bags(rows, 0)

    def item_bags(self, items: np.ndarray) -> Bags:
        if self._identity[1]:
            return _one_hot(items, self.item_offset)
        return _bags(self.item[np.asarray(items, dtype=np.int64)], self.item_offset)


def _one_hot(ids: np.ndarray, offset: int) -> Bags:
    ids = np.asarray(ids)
    return (np.arange(ids.size + 1, dtype=np.int32), ids.astype(np.int32) + np.int32(offset),
            np.ones(ids.size, np.float32))


def _bags(sub: sp.csr_matrix, offset: int) -> Bags:
    return (sub.indptr.astype(np.int32), sub.indices.astype(np.int32) + np.int32(offset),
            sub.data.astype(np.float32, copy=False))


def compact(bags: Bags) -> Bags:
    """The wire form: a batch of one-hot bags (one feature each, weight 1) is sent as its
    indices alone, with empty indptr and weights."""
    indptr, indices, weights = bags
    n = indptr.size - 1
    if indices.size == n and np.array_equal(indptr, np.arange(n + 1)) and (weights == 1).all():
        return np.empty(0, np.int32), indices, np.empty(0, np.float32)
    return bags


def concat_bags(*parts: Bags) -> Bags:
    """Bags of several batches, one after the other."""
    indptr = [np.zeros(1, np.int32)]
    total = 0
    for p in parts:
        indptr.append(p[0][1:] + total)
        total += p[0][-1]
    return (np.concatenate(indptr), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))
