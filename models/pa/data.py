"""What LocalPA and the Spark estimator accept as examples and labels: features as CSR
over the 2^hash_bits columns (indices as given, or hashed if they are raw), labels as
indices into the sorted classes."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping

import numpy as np
import scipy.sparse as sp

from psframework import ConfigError
from models.pa.hashing import hash_features

__all__ = ["Classes", "as_csr"]


def _index_pairs(rows: list, n_features: int) -> sp.csr_matrix:
    """Examples as (index, value) pairs or {index: value}: the indices are columns."""
    cols, values, starts = [], [], [0]
    for r, row in enumerate(rows):
        for item in (row.items() if isinstance(row, Mapping) else row):
            if not (isinstance(item, tuple) and len(item) == 2
                    and isinstance(item[0], numbers.Integral) and not isinstance(item[0], bool)
                    and isinstance(item[1], numbers.Real)):
                raise ConfigError(f"example {r}: with (index, value) pairs every feature must "
                                  f"be one, got {item!r}")
            index = int(item[0])
            if not 0 <= index < n_features:
                raise ConfigError(f"example {r}: feature index {item[0]} is outside [0, "
                                  f"{n_features}); raise hash_bits")
            cols.append(index)
            values.append(float(item[1]))
        starts.append(len(cols))
    X = sp.csr_matrix((np.array(values, np.float32), np.array(cols, np.int64),
                       np.array(starts, np.int64)), shape=(len(rows), n_features))
    X.sum_duplicates()
    if not np.isfinite(X.data).all():
        raise ConfigError("X holds NaN or infinite values")
    return X


def _first_feature(rows: list):
    for row in rows:
        items = list(row.items())[:1] if isinstance(row, Mapping) else (
            row[:1] if isinstance(row, (list, tuple)) else [])
        if items:
            return items[0]
    return None


def as_csr(X, hash_bits: int) -> sp.csr_matrix:
    """A scipy sparse matrix or 2-d array (its columns are feature indices); an iterable
    of examples as (index, value) pairs or {index: value} (the same, row by row); or an
    iterable of raw examples to hash (`hashing.hash_features`: string lists, {name:
    value}, (name, value) pairs). Returns canonical float32 CSR."""
    n_features = 1 << hash_bits
    if sp.issparse(X) or isinstance(X, np.ndarray):
        if X.ndim != 2:
            raise ConfigError(f"X must be 2-d (examples × features), got shape {X.shape}")
        if X.shape[1] > n_features:
            raise ConfigError(f"X has {X.shape[1]} columns but the model has 2^{hash_bits} = "
                              f"{n_features} features; raise hash_bits")
        if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
            raise ConfigError(f"X must hold real numbers, not {X.dtype}")
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        X.sum_duplicates()
        if not np.isfinite(X.data).all():
            raise ConfigError("X holds NaN or infinite values")
        return sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], n_features))
    if isinstance(X, (str, bytes)) or not isinstance(X, Iterable):
        raise ConfigError("X must be a scipy sparse matrix, a 2-d array, or a list of "
                          f"examples (dicts, string lists or (name, value) pairs), not "
                          f"{type(X).__name__}")
    rows = X if isinstance(X, list) else list(X)
    first = _first_feature(rows)
    if isinstance(first, tuple) and first and isinstance(first[0], numbers.Integral):
        return _index_pairs(rows, n_features)
    return hash_features(rows, hash_bits)


class Classes:
    """The sorted labels of a classifier. Two classes learn one weight vector (the
    second class is the positive one, as scikit-learn's); more, one per class."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    @classmethod
    def of(cls, labels) -> "Classes":
        values = np.unique(np.asarray(labels))
        if values.size < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, these labels hold "
                              f"{values.tolist()}; pass classes=[...] with every label the "
                              "data will hold")
        if values.dtype.kind not in "biufU":
            raise ConfigError(f"labels must be numbers or strings, not {values.dtype}")
        return cls(values)

    @property
    def n_weights(self) -> int:
        return 1 if self.values.size == 2 else int(self.values.size)

    def indices(self, y, n: int, fix: str = "pass every label in classes=[...] on the "
                "first partial_fit") -> np.ndarray:
        """Each label's class index; a ConfigError for a label not among the classes,
        ending with `fix`."""
        y = np.asarray(y)
        if y.shape != (n,):
            raise ConfigError(f"y must hold one label per example: {n}, got shape {y.shape}")
        at = np.clip(np.searchsorted(self.values, y), 0, self.values.size - 1)
        unknown = self.values[at] != y
        if unknown.any():
            raise ConfigError(f"label {y[unknown][0].item()!r} is not one of the classes "
                              f"{self.values.tolist()}; {fix}")
        return at.astype(np.int64)

    def to_wire(self) -> list:
        return self.values.tolist()

    @classmethod
    def from_wire(cls, values: list) -> "Classes":
        return cls(np.asarray(values))

    def __len__(self) -> int:
        return int(self.values.size)
