"""The feature space: user/context features and item features in one index space.

User feature g is feature g; item feature f is feature `n_user_features + f`. Without
side features a user is its own one-hot feature and so is an item (LightFM's default).
Given side features, pass the identity columns too if you want them (as in LightFM).
A *bag* batch is the CSR triple (indptr int64, indices int64, weights float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from psframework import ConfigError

__all__ = ["FeatureSpace", "Bags", "concat_bags"]

Bags = tuple[np.ndarray, np.ndarray, np.ndarray]


def _csr(m, rows: int, what: str) -> sp.csr_matrix:
    if m is None:
        return sp.identity(rows, dtype=np.float32, format="csr")
    m = sp.csr_matrix(m, dtype=np.float32)
    if m.shape[0] != rows:
        raise ConfigError(f"{what} has {m.shape[0]} rows, expected one per {what.split('_')[0]} "
                          f"({rows})")
    m.sort_indices()
    return m


@dataclass(frozen=True)
class FeatureSpace:
    user: sp.csr_matrix  # n_users × n_user_features
    item: sp.csr_matrix  # n_items × n_item_features

    @classmethod
    def build(cls, n_users: int, n_items: int, user_features=None, item_features=None
              ) -> "FeatureSpace":
        return cls(_csr(user_features, n_users, "user_features"),
                   _csr(item_features, n_items, "item_features"))

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
    def n_features(self) -> int:
        return self.user.shape[1] + self.item.shape[1]

    def user_bags(self, users: np.ndarray) -> Bags:
        return _rows(self.user, users, 0)

    def item_bags(self, items: np.ndarray) -> Bags:
        return _rows(self.item, items, self.n_user_features)

    def all_features(self) -> sp.csr_matrix:
        """Users then items as rows of one (n_users + n_items) × n_features matrix."""
        return sp.vstack([sp.hstack([self.user, sp.csr_matrix((self.n_users, self.item.shape[1]))]),
                          sp.hstack([sp.csr_matrix((self.n_items, self.n_user_features)),
                                     self.item])], format="csr", dtype=np.float32)


def _rows(m: sp.csr_matrix, rows: np.ndarray, offset: int) -> Bags:
    sub = m[np.asarray(rows, dtype=np.int64)]
    return (sub.indptr.astype(np.int64), sub.indices.astype(np.int64) + offset,
            sub.data.astype(np.float32, copy=False))


def concat_bags(*parts: Bags) -> Bags:
    """Bags of several batches, one after the other."""
    indptr = [np.zeros(1, np.int64)]
    total = 0
    for p in parts:
        indptr.append(p[0][1:] + total)
        total += p[0][-1]
    return (np.concatenate(indptr), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))
