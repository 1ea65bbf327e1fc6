"""Which of a local fit's interactions are FMPair positives, and each one's weight in
the loss (LightFM's rules; docs/fmpair.md, "Inputs"): `positives` makes the training
matrix the trainer reads (users × items, weights stored)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from psframework import ConfigError
from models.ids import Interactions

__all__ = ["positives"]


def positives(data: Interactions, threshold: float | None, sample_weight: Any = None,
              matrix: Any = None, frame: Any = None) -> sp.csr_matrix:
    """The training matrix: users × items, each positive's weight in the loss stored.

    Positives: with `threshold`, the interactions whose value is >= threshold; without,
    a matrix's stored nonzero entries (its values only select: LightFM's rule; negative
    values need a threshold), or every row of (users, items) columns, or of (users, items,
    weights) columns those with weight > 0. Weights: `sample_weight` (a sparse matrix with
    the same stored entries as the `matrix` interactions, or one value per row, or the
    name of a column of the DataFrame `frame`), else the third column when there is no
    threshold, else 1. A weight-0 positive is left out; a pair given twice adds its
    weights."""
    values, n = data.values, data.users.size
    weights: np.ndarray | None = None
    keep: np.ndarray
    if sample_weight is not None:
        weights = _sample_weight(sample_weight, n, matrix, frame)
    if threshold is not None:
        if values is None:
            raise ConfigError("threshold selects positives by their values, and these "
                              "interactions have none: pass (users, items, values), a "
                              "matrix, or a DataFrame with value_col=; or threshold=None")
        keep = values >= threshold
    elif matrix is not None:
        assert values is not None  # a matrix's stored entries are its values
        negative = np.flatnonzero(values < 0)
        if negative.size:
            t = negative[0]
            raise ConfigError(f"interactions holds negative values (e.g. {values[t]} at "
                              f"({data.users[t]}, {data.items[t]})): set threshold= to say "
                              f"which entries are positives")
        keep = values != 0
    else:
        if values is not None:
            if weights is not None:
                raise ConfigError("weights given twice, as the third column and as "
                                  "sample_weight: pass one (or set threshold=, to read the "
                                  "third column as ratings)")
            weights = values
        keep = np.ones(n, bool)
    if weights is not None:
        bad = np.flatnonzero(weights < 0)
        if bad.size:
            raise ConfigError(f"weights must be >= 0, row {int(bad[0])} has "
                              f"{weights[bad[0]]}")
        keep &= weights > 0
    w = np.ones(int(keep.sum()), np.float32) if weights is None else weights[keep]
    train = sp.csr_matrix((w.astype(np.float32), (data.users[keep], data.items[keep])),
                          shape=data.shape)
    train.sum_duplicates()
    train.eliminate_zeros()
    if train.nnz == 0:
        raise ConfigError("interactions has no positives to train on"
                          + (f" (none has a value >= threshold={threshold})"
                             if threshold is not None else ""))
    return train


def _sample_weight(sample_weight: Any, n: int, matrix: Any, frame: Any) -> np.ndarray:
    """One weight per interaction, in the order `models.ids.interactions` reads them."""
    if isinstance(sample_weight, str):
        if frame is None or sample_weight not in frame.columns:
            raise ConfigError(f"sample_weight {sample_weight!r} names no column of the "
                              f"interactions (a column name needs a DataFrame)")
        sample_weight = frame[sample_weight].to_numpy()
    if sp.issparse(sample_weight):
        if matrix is None:
            raise ConfigError("a sparse sample_weight needs sparse interactions of its shape; "
                              "give one weight per row otherwise")
        ours, theirs = sp.csr_matrix(matrix), sp.csr_matrix(sample_weight, dtype=np.float64)
        for m in (ours, theirs):
            m.sum_duplicates()
            m.sort_indices()
        if ours.shape != theirs.shape or not (np.array_equal(ours.indptr, theirs.indptr)
                                              and np.array_equal(ours.indices, theirs.indices)):
            raise ConfigError(f"sample_weight must have the stored entries of interactions "
                              f"(LightFM's rule): shapes {theirs.shape} and {ours.shape}, "
                              f"{theirs.nnz} and {ours.nnz} entries")
        sample_weight = theirs.data
    elif matrix is not None:
        raise ConfigError("with a matrix of interactions, sample_weight must be a sparse "
                          "matrix with the same stored entries (LightFM's rule)")
    weights = np.asarray(sample_weight, np.float64).ravel()
    if weights.size != n:
        raise ConfigError(f"sample_weight needs one weight per interaction ({n}), got "
                          f"{weights.size}")
    if not np.isfinite(weights).all():
        raise ConfigError("sample_weight must be finite numbers")
    return weights
