"""Ids ↔ indices for the recommenders' local APIs (LightFM's `Dataset`, smaller), and
every accepted form of interactions read into index arrays.

    data = interactions(df, user_col="user", item_col="item", value_col="rating")
    data.users, data.items, data.values       # int64 indices, int64 indices, float64
    data.ids.user_ids(data.users)             # the caller's ids again

A model works on rows 0..n_users-1 and 0..n_items-1; its `IdMap` says which id each row
is. Ids are any hashable values (strings, integers, mixed). Numbering: a scipy matrix's
ids are its row and column indices (identity, empty rows included); other ids are
numbered in sorted order (in order of first appearance when they cannot be sorted
together, e.g. strings mixed with integers), so integer ids 0..n-1 that all occur are
their own indices. `fit_partial` numbers ids it has not seen after the known ones.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from psframework import ConfigError

__all__ = ["IdMap", "UnknownIdError", "Interactions", "interactions"]

SHOWN = 5  # unknown ids an error names


class UnknownIdError(ConfigError, KeyError):
    """Ids the model was not fitted on; `ids` lists them (each once), `kind` says whether
    they are user or item ids."""

    def __init__(self, kind: str, unknown: Sequence[Any], known: int,
                 fix: str | None = None) -> None:
        self.kind, self.ids = kind, list(unknown)
        named = ", ".join(repr(x) for x in self.ids[:SHOWN])
        more = f" and {len(self.ids) - SHOWN} more" if len(self.ids) > SHOWN else ""
        super().__init__(f"unknown {kind} id(s) {named}{more}: the model knows the {known} "
                         f"{kind}s it was fitted on; "
                         + (fix or f"fit it on interactions of these {kind}s first"))

    def __str__(self) -> str:  # KeyError's would quote the message
        return str(self.args[0])


def _column(values: Any, what: str) -> np.ndarray:
    """`values` as a 1-d array (ConfigError naming `what` otherwise)."""
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy()
    array = np.asarray(values)
    if array.dtype.kind in "US" and not isinstance(values, np.ndarray):
        array = np.array(values, dtype=object)  # numpy would make [5, "a"] strings
    if array.ndim != 1:
        if array.ndim == 0:
            array = array.reshape(1)
        else:
            raise ConfigError(f"{what} must be 1-d (one id per row), got shape {array.shape}")
    return array


def _integral(ids: np.ndarray) -> bool:
    return ids.dtype.kind in "iu" or (ids.dtype == object and all(
        isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in ids))


def _numbered(ids: np.ndarray) -> np.ndarray:
    """The distinct ids, sorted (in order of first appearance if they cannot be)."""
    distinct = pd.unique(ids if ids.dtype != object else pd.Series(ids, dtype=object))
    distinct = np.asarray(distinct)
    try:
        return np.sort(distinct, kind="stable")
    except TypeError:
        return distinct


class _Side:
    """One side's ids: `n` identity indices (labels None), or the labels of rows 0..n-1."""

    def __init__(self, kind: str, n: int = 0, labels: pd.Index | None = None) -> None:
        self.kind, self.labels = kind, labels
        self.n = n if labels is None else len(labels)

    def index(self, ids: Any, strict: bool = True) -> np.ndarray:
        """Each id's row (int64); unknown ids: UnknownIdError if `strict`, else -1."""
        ids = _column(ids, f"{self.kind} ids")
        if self.labels is None:
            if _integral(ids):
                rows = ids.astype(np.int64)
                rows[(rows < 0) | (rows >= self.n)] = -1
            else:
                rows = np.full(ids.size, -1, np.int64)
        else:
            rows = self.labels.get_indexer(pd.Index(ids, dtype=ids.dtype if ids.dtype
                                                    != object else object)).astype(np.int64)
        if strict and (rows < 0).any():
            raise UnknownIdError(self.kind, list(pd.unique(pd.Series(ids[rows < 0],
                                                                     dtype=object))), self.n)
        return rows

    def ids(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        return rows.copy() if self.labels is None else self.labels.to_numpy()[rows]

    def extended(self, ids: np.ndarray) -> "_Side":
        """This side with the ids it does not know numbered after the known ones."""
        new = _numbered(ids[self.index(ids, strict=False) < 0]) if ids.size else ids
        if new.size == 0:
            return self
        if (self.labels is None and _integral(new)
                and np.array_equal(new.astype(np.int64), np.arange(self.n, self.n + new.size))):
            return _Side(self.kind, self.n + new.size)  # still the identity
        known = pd.Index(np.arange(self.n)) if self.labels is None else self.labels
        labels = known.append(pd.Index(new, dtype=object if new.dtype == object else None))
        if labels.has_duplicates:  # e.g. 1 and 1.0 numbered apart, then found equal
            raise ConfigError(f"{self.kind} ids {list(new[:SHOWN])!r} collide with known "
                              f"ones (equal but of another type): use one type of id")
        return _Side(self.kind, labels=labels)


class IdMap:
    """Users ↔ rows and items ↔ columns of a model (LightFM's `Dataset.fit` and
    `mapping`, in one small type shared by every recommender).

        ids = IdMap().fit(users=["ann", "bob"], items=["x", "y", "z"])
        ids.user_index(["bob"])  → array([1]);  ids.item_ids([2])  → array(['z'])
    """

    def __init__(self) -> None:
        self._users, self._items = _Side("user"), _Side("item")

    @classmethod
    def identity(cls, n_users: int, n_items: int) -> "IdMap":
        """Ids that are their own indices (a users × items matrix's)."""
        out = cls()
        out._users, out._items = _Side("user", int(n_users)), _Side("item", int(n_items))
        return out

    def fit(self, users: Any = (), items: Any = ()) -> "IdMap":
        """Number these ids afresh (forgetting any known ones); returns self."""
        self._users, self._items = _Side("user"), _Side("item")
        return self.fit_partial(users, items)

    def fit_partial(self, users: Any = (), items: Any = ()) -> "IdMap":
        """Number the ids not known yet after the known ones; returns self."""
        self._users = self._users.extended(_column(users, "users"))
        self._items = self._items.extended(_column(items, "items"))
        return self

    @property
    def n_users(self) -> int:
        return self._users.n

    @property
    def n_items(self) -> int:
        return self._items.n

    @property
    def is_identity(self) -> bool:
        """Whether every id is its own index."""
        return self._users.labels is None and self._items.labels is None

    def user_index(self, ids: Any, strict: bool = True) -> np.ndarray:
        """The rows of these user ids (int64); UnknownIdError naming the unknown ones
        (or -1 for them, unless `strict`)."""
        return self._users.index(ids, strict)

    def item_index(self, ids: Any, strict: bool = True) -> np.ndarray:
        """The columns of these item ids (int64), as user_index."""
        return self._items.index(ids, strict)

    def user_ids(self, rows: Any) -> np.ndarray:
        """The user ids of these rows."""
        return self._users.ids(rows)

    def item_ids(self, columns: Any) -> np.ndarray:
        """The item ids of these columns (any shape)."""
        return self._items.ids(columns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return all(a.n == b.n and (a.labels is None) == (b.labels is None)
                   and (a.labels is None or a.labels.equals(b.labels))
                   for a, b in ((self._users, other._users), (self._items, other._items)))

    def __repr__(self) -> str:
        kind = "identity" if self.is_identity else "labelled"
        return f"IdMap({self.n_users} users, {self.n_items} items, {kind})"

    # -- persistence: the ids as one JSON string array, for np.savez --------------------
    def to_array(self) -> np.ndarray:
        """Both sides as JSON (each its size and its ids, None for identity) in a 0-d
        array, which np.savez stores without pickling."""
        return np.array(json.dumps({
            side.kind: [side.n, None if side.labels is None else
                        [x.item() if isinstance(x, np.generic) else x for x in side.labels]]
            for side in (self._users, self._items)}))

    @classmethod
    def from_array(cls, array: np.ndarray) -> "IdMap":
        """The map `to_array` saved."""
        saved = json.loads(str(array))
        out = cls()
        out._users, out._items = (_Side(kind, n, None if labels is None else
                                        pd.Index(labels, dtype=object))
                                  for kind in ("user", "item") for n, labels in [saved[kind]])
        return out


@dataclass
class Interactions:
    """Interactions as indices: users[t], items[t] (int64) and values[t] (float64; None
    when the input had none), with the IdMap that numbers them."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray | None
    ids: IdMap

    @property
    def shape(self) -> tuple[int, int]:
        return self.ids.n_users, self.ids.n_items


ACCEPTED = ("a scipy sparse users × items matrix, a tuple (users, items) or (users, items, "
            "values) of equal-length arrays, a list of (user, item[, value]) tuples, or a "
            "pandas DataFrame")


def _parts(data: Any, user_col: str, item_col: str, value_col: str | None,
           what: str) -> tuple[Any, Any, Any, tuple[int, int] | None]:
    """users, items, values (or None) and a matrix's shape (or None), from any accepted
    form."""
    if sp.issparse(data):
        coo = sp.coo_matrix(data)
        coo.sum_duplicates()
        return coo.row, coo.col, coo.data, coo.shape
    if isinstance(data, pd.DataFrame):
        names = [user_col, item_col] + ([value_col] if value_col is not None else [])
        missing = [c for c in names if c not in data.columns]
        if missing:
            raise ConfigError(f"{what}: the DataFrame has no column(s) {missing} (it has "
                              f"{list(data.columns)}); name the columns with user_col=, "
                              f"item_col= and value_col=")
        return (data[user_col], data[item_col],
                None if value_col is None else data[value_col], None)
    if isinstance(data, np.ndarray):
        if data.ndim == 2 and data.shape[1] in (2, 3):
            raise ConfigError(
                f"{what}: a 2-d array of shape {data.shape} is ambiguous: pass its columns, "
                f"tuple(a.T) (users, items[, values]), for one interaction per row, or "
                f"scipy.sparse.csr_matrix(a) for a users × items matrix")
        if data.ndim == 2:
            return _parts(sp.coo_matrix(data), user_col, item_col, value_col, what)
    columns = (isinstance(data, tuple) or (isinstance(data, list) and data and all(
        isinstance(c, (np.ndarray, pd.Series)) for c in data)))
    if columns and len(data) in (2, 3):
        return data[0], data[1], data[2] if len(data) == 3 else None, None
    if isinstance(data, list) and data and all(isinstance(r, (tuple, list)) for r in data):
        widths = {len(r) for r in data}
        if widths in ({2}, {3}):
            cols = list(zip(*data))
            return (np.array(cols[0], dtype=object), np.array(cols[1], dtype=object),
                    cols[2] if widths == {3} else None, None)
        raise ConfigError(f"{what}: a list of rows must hold (user, item) or (user, item, "
                          f"value) tuples, all of one length; got lengths {sorted(widths)}")
    raise ConfigError(f"{what} must be {ACCEPTED}; got {type(data).__name__}"
                      + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))


def _ids(values: Any, what: str) -> np.ndarray:
    ids = _column(values, what)
    if ids.dtype == object and all(isinstance(x, numbers.Integral) and not isinstance(x, bool)
                                   for x in ids):
        ids = ids.astype(np.int64)  # plain integers from a list of tuples
    if ids.dtype.kind == "f" or ids.dtype == object:
        if pd.isna(pd.Series(ids, dtype=object)).any():
            raise ConfigError(f"{what} hold a missing value (None or NaN); drop those rows")
    return ids


def interactions(data: Any, ids: IdMap | None = None, *, extend: bool = False,
                 user_col: str = "user", item_col: str = "item",
                 value_col: str | None = None, what: str = "interactions") -> Interactions:
    """Any accepted form of interactions (`ACCEPTED`) as indices. `ids`: number them by
    this map (UnknownIdError for ids it lacks, unless `extend`: a copy numbering them after
    its own); None: a fresh map (a matrix's is the identity of its shape). A DataFrame's
    columns are user_col, item_col and, if given, value_col. Values must be finite."""
    users, items, values, shape = _parts(data, user_col, item_col, value_col, what)
    users, items = _ids(users, f"{what}: the user ids"), _ids(items, f"{what}: the item ids")
    if users.size != items.size:
        raise ConfigError(f"{what}: users and items must have one length, got {users.size} "
                          f"and {items.size}")
    if values is not None:
        values = _column(values, f"{what}: the values")
        if values.size != users.size:
            raise ConfigError(f"{what}: values must have one per interaction "
                              f"({users.size}), got {values.size}")
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: values must be numbers, got {values.dtype}") from None
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ConfigError(f"{what}: values must be finite numbers; row {int(bad[0])} "
                              f"holds {values[bad[0]]}")
    if ids is None:
        ids = IdMap.identity(*shape) if shape is not None else IdMap().fit(users, items)
    elif extend:
        grown = IdMap()
        grown._users, grown._items = ids._users, ids._items
        ids = grown.fit_partial(users, items)
    return Interactions(ids.user_index(users), ids.item_index(items), values, ids)
