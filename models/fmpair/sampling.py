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

import numpy as np
import scipy.sparse as sp

from psframework import ConfigError

__all__ = ["SAMPLERS", "NegativeSampler"]

SAMPLERS = ("uniform", "exp", "crossbatch")


def _keys(rows: np.ndarray, cols: np.ndarray, width: int) -> np.ndarray:
    return rows.astype(np.int64) * width + cols.astype(np.int64)


class NegativeSampler:
    def __init__(self, train: sp.csr_matrix, kind: str = "uniform", rho: float = 1.0,
                 filter_seen: bool = True, attribute: np.ndarray | None = None,
                 max_tries: int = 10) -> None:
        if kind not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {kind!r}")
        if kind == "exp" and not rho > 0:
            raise ConfigError(f"rho must be > 0, got {rho!r}")
        self.kind = kind
        self.n_items = train.shape[1]
        self.max_tries = max_tries
        coo = train.tocoo()
        self._seen = np.unique(_keys(coo.row, coo.col, self.n_items)) if filter_seen else None
        self._attr = None
        if attribute is not None:
            attribute = np.asarray(attribute, dtype=np.int64)
            if attribute.shape != (self.n_items,):
                raise ConfigError(f"the sampling attribute needs one value per item ({self.n_items})")
            self._attr, self._n_attr = attribute, int(attribute.max()) + 1
            self._user_attr = np.unique(_keys(coo.row, attribute[coo.col], self._n_attr))
        if kind == "exp":
            popularity = np.asarray(train.sum(axis=0)).ravel()
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
        users, items = np.broadcast_arrays(users, items)
        bad = np.zeros(items.shape, bool)
        if self._seen is not None:
            keys = _keys(users, items, self.n_items)
            bad |= _member(keys, self._seen)
        if self._attr is not None:
            bad |= _member(_keys(users, self._attr[items], self._n_attr), self._user_attr)
        return bad

    def sample(self, rng: np.random.Generator, users: np.ndarray, per_user: int) -> np.ndarray:
        """`per_user` accepted negatives for each user (users × per_user); a draw still
        rejected after max_tries is kept, so a batch always has its negatives."""
        users = np.asarray(users)[:, None]
        out = self.draw(rng, (users.shape[0], per_user))
        bad = self.rejected(users, out)
        for _ in range(self.max_tries):
            if not bad.any():
                break
            out[bad] = self.draw(rng, int(bad.sum()))
            bad = self.rejected(users, out)
        return out


def _member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if sorted_set.size == 0:
        return np.zeros(keys.shape, bool)
    at = np.minimum(np.searchsorted(sorted_set, keys), sorted_set.size - 1)
    return sorted_set[at] == keys
