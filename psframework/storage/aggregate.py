"""Push aggregation: how a pushed value combines with the stored one.

A combiner is `combine(stored, pushed) -> new`, applied element by element in request
order, so duplicate indices in one push accumulate (two adds of 1 to the same cell add
2). Built in: add, min, max, replace. A plugin adds its own by naming a numba-jitted
function in `Model.aggregators`. A shard applies pushes on its event loop, one at a time;
the kernels release the GIL, so its threaded UDFs (on the shard's pool) and its heartbeat
thread keep running meanwhile.

Compilation never happens on a request's path: indices arrive as int64 (`Partition`
normalises them), the built-in combiners run in kernels that numba caches on disk — so
a machine compiles them once, and a fresh shard loads them (`warm_up`, off its event
loop) — and a plugin's combiner is compiled for its table when the table is created.
"""

from __future__ import annotations

from typing import Callable

import numba
import numpy as np

__all__ = ["BUILTIN", "scatter_rows", "scatter_elems", "is_combiner", "compile_for", "finite",
           "warm_up", "compiled"]


@numba.njit(inline="always")
def add(stored, pushed):
    return stored + pushed


@numba.njit(inline="always")
def minimum(stored, pushed):
    return pushed if pushed < stored else stored


@numba.njit(inline="always")
def maximum(stored, pushed):
    return pushed if pushed > stored else stored


@numba.njit(inline="always")
def replace(stored, pushed):
    return pushed


BUILTIN: dict[str, Callable] = {"add": add, "min": minimum, "max": maximum, "replace": replace}
_CODE: dict[Callable, int] = {add: 0, minimum: 1, maximum: 2, replace: 3}  # the cached kernels' names


def is_combiner(fn: object) -> bool:
    return isinstance(fn, numba.core.registry.CPUDispatcher)


# -- built-in combiners: cacheable kernels (a combiner passed as an argument is not) ----------
@numba.njit(inline="always")
def _builtin(code, stored, pushed):
    if code == 0:
        return add(stored, pushed)
    if code == 1:
        return minimum(stored, pushed)
    if code == 2:
        return maximum(stored, pushed)
    return replace(stored, pushed)


@numba.njit(nogil=True, cache=True)
def _rows_builtin(dst, rows, values, code):
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(dst.shape[1]):
            dst[r, j] = _builtin(code, dst[r, j], values[i, j])


@numba.njit(nogil=True, cache=True)
def _elems_2d_builtin(dst, rows, cols, values, code):
    for i in range(rows.shape[0]):
        dst[rows[i], cols[i]] = _builtin(code, dst[rows[i], cols[i]], values[i])


@numba.njit(nogil=True, cache=True)
def _elems_1d_builtin(dst, idx, values, code):
    for i in range(idx.shape[0]):
        dst[idx[i]] = _builtin(code, dst[idx[i]], values[i])


# -- a plugin's combiner ------------------------------------------------------------------------
@numba.njit(nogil=True)
def _rows(dst, rows, values, combine):
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(dst.shape[1]):
            dst[r, j] = combine(dst[r, j], values[i, j])


@numba.njit(nogil=True)
def _elems_2d(dst, rows, cols, values, combine):
    for i in range(rows.shape[0]):
        dst[rows[i], cols[i]] = combine(dst[rows[i], cols[i]], values[i])


@numba.njit(nogil=True)
def _elems_1d(dst, idx, values, combine):
    for i in range(idx.shape[0]):
        dst[idx[i]] = combine(dst[idx[i]], values[i])


@numba.njit(nogil=True, cache=True)
def _nonfinite(bits, exponent):
    """Whether any float (as its bits) has an all-ones exponent (inf or NaN): integer
    operations that vectorize, so the check runs at memory speed."""
    found = 0
    for i in range(bits.shape[0]):
        found |= (bits[i] & exponent) == exponent
    return found


_EXPONENT = {4: (np.uint32, np.uint32(0x7F800000)), 8: (np.uint64, np.uint64(0x7FF0000000000000))}


def scatter_rows(dst: np.ndarray, rows: np.ndarray, values: np.ndarray, combine: Callable) -> None:
    """dst[rows[i], :] = combine(dst[rows[i], :], values[i, :]) for each i in order."""
    code = _CODE.get(combine)
    if dst.ndim == 1:
        if code is None:
            _elems_1d(dst, rows, values, combine)
        else:
            _elems_1d_builtin(dst, rows, values, code)
    elif code is None:
        _rows(dst, rows, values, combine)
    else:
        _rows_builtin(dst, rows, values, code)


def scatter_elems(dst: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                  combine: Callable) -> None:
    """dst[rows[i], cols[i]] = combine(dst[rows[i], cols[i]], values[i]) for each i."""
    code = _CODE.get(combine)
    if code is None:
        _elems_2d(dst, rows, cols, values, combine)
    else:
        _elems_2d_builtin(dst, rows, cols, values, code)


def finite(values: np.ndarray) -> bool:
    """No NaN or infinity among `values` (a float32 or float64 array)."""
    flat = np.ascontiguousarray(values).reshape(-1)
    uint, exponent = _EXPONENT[flat.itemsize]
    return not _nonfinite(flat.view(uint), exponent)


def compile_for(dst: np.ndarray, combine: Callable) -> None:
    """Compile (or load from numba's cache) the kernels that pushes into this table use,
    now — an empty push — so that the first real push does not wait for it."""
    rows = np.empty(0, np.int64)
    if dst.ndim == 1:
        scatter_rows(dst, rows, dst[:0], combine)
    else:
        scatter_rows(dst, rows, dst[:0], combine)
        scatter_elems(dst, rows, rows, dst[:0, 0], combine)
    if dst.dtype.kind == "f":
        finite(dst[:0])


def warm_up(dtypes: tuple[str, ...] = ("float32", "float64", "int32", "int64")) -> None:
    """Load every built-in kernel for every table dtype (from numba's cache, after the
    first run on a machine): a fresh shard does this on a thread as it starts."""
    for dtype in dtypes:
        for shape in ((0,), (0, 1)):
            compile_for(np.empty(shape, dtype), add)


def compiled() -> int:
    """How many kernel specializations this process holds (a number that must not grow
    with the requests a shard serves, only with the tables it creates)."""
    kernels = (_rows_builtin, _elems_2d_builtin, _elems_1d_builtin, _rows, _elems_2d,
               _elems_1d, _nonfinite)
    return sum(len(k.signatures) for k in kernels)
