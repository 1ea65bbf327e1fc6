"""What a client checks before anything is sent: indices in range, values that the
table's dtype holds unchanged, paths. The shards check again (a peer may skip these), but
a request split over several partitions must fail here, whole, or it could be applied on
some partitions and refused on others."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from psframework.errors import ConfigError, DTypeError, ShapeError
from psframework.storage.table import TableSpec

__all__ = ["indices", "values", "directory"]


def indices(idx: Any, length: int, what: str) -> np.ndarray:
    a = np.asarray(idx)
    if a.dtype.kind not in "iu" and a.size:
        raise ShapeError(f"{what} must be integers, got {a.dtype}")
    if a.ndim > 1:
        raise ShapeError(f"{what} must be a 1-d array of indices")
    a = a.astype(np.int64, copy=False).reshape(-1)
    if a.size <= 8:  # a few indices: Python's min/max beat numpy's reductions' set-up
        few = a.tolist()
        low, high = (min(few), max(few)) if few else (0, -1)
    else:
        low, high = int(a.min()), int(a.max())
    if a.size and (low < 0 or high >= length):
        raise ShapeError(f"{what} out of range: valid indices are 0..{length - 1}")
    return a


def values(values: Any, spec: TableSpec, shape: tuple[int, ...]) -> np.ndarray:
    """`values` as the table's dtype — refused with DTypeError when that would change a
    value (an integer out of range, a float that overflows; rounding to the table's
    float precision is fine) or bring NaN/inf into a table that does not allow them."""
    v = np.asarray(values)
    if not np.can_cast(v.dtype, spec.dtype, casting="same_kind"):
        raise DTypeError(f"cannot push {v.dtype} values into {spec.dtype} table {spec.name!r}; "
                         "cast them first")
    if v.shape != shape:
        raise ShapeError(f"values have shape {list(v.shape)}, expected {list(shape)} for "
                         f"table {spec.name!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = v.astype(spec.dtype, copy=False)
        # one pass: a sum is finite when every term is (it may overflow for huge finite
        # values; the exact check then clears them)
        narrowed = v.dtype.kind == "f" and v.dtype.itemsize > out.dtype.itemsize
        suspect = (out.dtype.kind == "f" and out.size and (narrowed or not spec.allow_nonfinite)
                   and not np.isfinite(out.sum()))
    if suspect and not np.isfinite(out).all():
        if narrowed and (np.isfinite(v) & ~np.isfinite(out)).any():
            raise DTypeError(f"values beyond the range of {spec.dtype} (largest "
                             f"{np.finfo(out.dtype).max:.3g}) cannot go into table "
                             f"{spec.name!r}; scale them or use a float64 table")
        if not spec.allow_nonfinite:
            raise spec.nonfinite_error()
    elif out.dtype.kind in "iu" and v.dtype.kind in "iu" and out.dtype != v.dtype and v.size:
        info = np.iinfo(out.dtype)
        low, high = v.min(), v.max()
        if low < info.min or high > info.max:
            raise DTypeError(f"value {low if low < info.min else high} does not fit "
                             f"{spec.dtype} table {spec.name!r} ({info.min}..{info.max})")
    return out


def directory(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"expected a directory path, got {path!r}")
    return str(Path(path).absolute())
