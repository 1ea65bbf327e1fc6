"""Negative samplers and acceptance rules (worker side, numpy, seeded).

- uniform: every item equally likely.
- exp: by popularity rank r (0 = most popular), P(r) ∝ exp(-r / (rho · n_items)), the
  static sampler of LambdaFM: small rho concentrates on popular items (harder negatives).
- crossbatch: no sampling — the other examples' positives in the batch are the negatives.

Acceptance, applied by resampling rejected draws up to `max_tries` times:
- `filter_seen`: reject an item the user already has;
- `attribute` (e.g. artist per item): reject an item sharing an attribute value with
  any of the user's positives.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from psframework import ConfigError

__all__ = ["SAMPLERS", "NegativeSampler"]

SAMPLERS = ("uniform", "exp", "crossbatch")


@numba.njit(nogil=True, cache=True, inline="always")
def _contains(sorted_values, lo, hi, value):
    """Is `value` in sorted_values[lo:hi]? (a plain binary search: 4x faster than
    np.searchsorted on a slice inside numba)"""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and sorted_values[lo] == value


@numba.njit(nogil=True, cache=True)
def _rejected(users, items, seen_ptr, seen_idx, attr, attr_ptr, attr_idx, use_seen, use_attr):
    """For each (users[t], items[t]): is the item among the user's positives (rows of a
    CSR with sorted indices), or does it share an attribute value with them?"""
    out = np.zeros(users.shape[0], dtype=np.bool_)
    for t in range(users.shape[0]):
        u, j = users[t], items[t]
        if use_seen and _contains(seen_idx, seen_ptr[u], seen_ptr[u + 1], j):
            out[t] = True
        elif use_attr:
            out[t] = _contains(attr_idx, attr_ptr[u], attr_ptr[u + 1], attr[j])
    return out


class NegativeSampler:
    def __init__(self, train: sp.csr_matrix, kind: str = "uniform", rho: float = 1.0,
                 filter_seen: bool = True, attribute: np.ndarray | None = None,
                 max_tries: int = 10, popularity: np.ndarray | None = None) -> None:
        """`popularity` (one count per item) ranks items for the exp sampler; by default
        the item counts of `train` (pass global counts when `train` is one worker's share)."""
        if kind not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {kind!r}")
        if kind == "exp" and not rho > 0:
            raise ConfigError(f"rho must be > 0, got {rho!r}")
        self.kind = kind
        self.n_items = train.shape[1]
        self.max_tries = max_tries
        train = sp.csr_matrix(train, copy=True)
        train.sort_indices()
        self._seen = (train.indptr.astype(np.int64), train.indices.astype(np.int64))
        self._use_seen = filter_seen
        self._use_attr = attribute is not None
        self._attr = np.zeros(1, np.int64)
        self._user_attr = (np.zeros(train.shape[0] + 1, np.int64), np.zeros(0, np.int64))
        if attribute is not None:
            self._attr = np.asarray(attribute, dtype=np.int64)
            if self._attr.shape != (self.n_items,):
                raise ConfigError(f"the sampling attribute needs one value per item ({self.n_items})")
            ua = sp.csr_matrix((np.ones(train.nnz), self._attr[train.indices],
                                train.indptr.copy()),  # sum_duplicates rewrites it in place
                               shape=(train.shape[0], int(self._attr.max()) + 1))
            ua.sum_duplicates()  # one sorted entry per (user, attribute value)
            self._user_attr = (ua.indptr.astype(np.int64), ua.indices.astype(np.int64))
        if kind == "exp":
            if popularity is None:
                popularity = np.asarray(train.sum(axis=0)).ravel()
            popularity = np.asarray(popularity)
            if popularity.shape != (self.n_items,):
                raise ConfigError(f"popularity needs one count per item ({self.n_items})")
            self._by_rank = np.argsort(-popularity, kind="stable")
            self._scale = rho * self.n_items

    def draw(self, rng: np.random.Generator, size) -> np.ndarray:
        if self.kind == "exp":
            u = rng.random(size)
            top = 1.0 - np.exp(-self.n_items / self._scale)
            rank = np.minimum((-np.log1p(-u * top) * self._scale).astype(np.int64), self.n_items - 1)
            return self._by_rank[rank]
        return rng.integers(0, self.n_items, size=size)

    def rejected(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Which (user, item) pairs the acceptance rules turn down (shapes broadcast)."""
        users, items = np.broadcast_arrays(np.asarray(users, np.int64), np.asarray(items, np.int64))
        if not (self._use_seen or self._use_attr):
            return np.zeros(items.shape, bool)
        flat = _rejected(users.ravel(), items.ravel(), *self._seen, self._attr,
                         *self._user_attr, self._use_seen, self._use_attr)
        return flat.reshape(items.shape)

    def sample(self, rng: np.random.Generator, users: np.ndarray, per_user: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """(`per_user` negatives for each user, users × per_user; which were accepted).
        Rejected draws are redrawn up to max_tries times; one still rejected is kept but
        marked, so the batch keeps its shape and the loss ignores it."""
        users = np.repeat(np.asarray(users, np.int64), per_user)
        out = self.draw(rng, users.size)
        bad = self.rejected(users, out)
        for _ in range(self.max_tries):
            redo = np.flatnonzero(bad)
            if redo.size == 0:
                break
            out[redo] = self.draw(rng, redo.size)
            bad[redo] = self.rejected(users[redo], out[redo])
        shape = (users.size // max(per_user, 1), per_user)
        return out.reshape(shape), ~bad.reshape(shape)
