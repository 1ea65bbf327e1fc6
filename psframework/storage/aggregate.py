"""Push aggregation: how a pushed value combines with the stored one.

A combiner is a numba-jitted scalar function `combine(stored, pushed) -> new`. The scatter
kernels apply it element by element, in request order, so duplicate indices in one push
accumulate (two adds of 1 to the same cell add 2). Built in: add, min, max, replace.
A plugin adds its own by naming a jitted function in `Model.aggregators`. Kernels release
the GIL, so a shard can apply pushes on one thread while another serves.
"""

from __future__ import annotations

from typing import Callable

import numba
import numpy as np

__all__ = ["BUILTIN", "scatter_rows", "scatter_elems", "is_combiner", "compile_for"]


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


def is_combiner(fn: object) -> bool:
    return isinstance(fn, numba.core.registry.CPUDispatcher)


@numba.njit(nogil=True)
def _scatter_rows(dst, rows, values, combine):
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(dst.shape[1]):
            dst[r, j] = combine(dst[r, j], values[i, j])


@numba.njit(nogil=True)
def _scatter_elems_2d(dst, rows, cols, values, combine):
    for i in range(rows.shape[0]):
        dst[rows[i], cols[i]] = combine(dst[rows[i], cols[i]], values[i])


@numba.njit(nogil=True)
def _scatter_elems_1d(dst, idx, values, combine):
    for i in range(idx.shape[0]):
        dst[idx[i]] = combine(dst[idx[i]], values[i])


def scatter_rows(dst: np.ndarray, rows: np.ndarray, values: np.ndarray, combine: Callable) -> None:
    """dst[rows[i], :] = combine(dst[rows[i], :], values[i, :]) for each i in order."""
    if dst.ndim == 1:
        _scatter_elems_1d(dst, rows, values, combine)
    else:
        _scatter_rows(dst, rows, values, combine)


def scatter_elems(dst: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                  combine: Callable) -> None:
    """dst[rows[i], cols[i]] = combine(dst[rows[i], cols[i]], values[i]) for each i."""
    _scatter_elems_2d(dst, rows, cols, values, combine)


def compile_for(dst: np.ndarray, combine: Callable) -> None:
    """Compile the scatter kernels for this table's dtype and combiner now (an empty push),
    so that the first real push does not stall its caller for the compilation."""
    rows = np.empty(0, np.int64)
    if dst.ndim == 1:
        _scatter_elems_1d(dst, rows, dst[:0], combine)
    else:
        _scatter_rows(dst, rows, dst[:0], combine)
        _scatter_elems_2d(dst, rows, rows, dst[:0, 0], combine)
