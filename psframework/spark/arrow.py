"""Arrow batches (what `DataFrame.mapInArrow` hands a Spark task) to numpy and scipy, a
column at a time and without a Python loop per row: how a PS application's Spark tasks
read their data in blocks (models' estimators train and score this way).

    from psframework.spark import arrow
    def task(batches):
        for batch in batches:
            users = arrow.ids(batch.column("user"))
            features = arrow.vectors_to_csr(batch.column("features"), width)

A pyspark.ml Vector column arrives as its SQL struct (type 0 sparse / 1 dense, size,
indices, values); `vectors_to_csr` turns a batch of them into one CSR matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from psframework.errors import ConfigError

__all__ = ["ids", "vectors_to_csr", "vector_parts", "lists_to_csr", "rows_to_lists",
           "sparse_parts",
           "per_id_csr", "SPARSE_PARTS"]

SPARSE_PARTS = "id long, size int, indices array<int>, values array<float>"


def _flat(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def ids(column, missing: int = -1) -> np.ndarray:
    """An integer column as int64, nulls as `missing`."""
    column = _flat(column)
    if column.null_count:
        column = pc.fill_null(column, missing)
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _list_parts(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(offsets from 0, the values they index) of a list array, slices and nulls
    included (a null list has no values)."""
    offsets = column.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = column.values.slice(offsets[0], offsets[-1] - offsets[0])
    return offsets - offsets[0], values


def vectors_to_csr(column, width: int, *, nulls: str = "error",
                   what: str = "a feature vector", dtype: Any = np.float32) -> sp.csr_matrix:
    """Vectors (sparse or dense) as a CSR of `dtype` (float32 unless given) with `width`
    columns. A null vector is an error (nulls="error") or an empty row (nulls="empty")."""
    column = _flat(column)
    n = len(column)
    if n == 0:
        return sp.csr_matrix((0, width), dtype=dtype)
    if column.null_count and nulls == "error":
        raise ConfigError(f"{what} is null; every row needs one")
    kind, size, indices, values = column.flatten()  # nulls: null children
    dense = ids(kind, 0) == 1
    v_off, v_flat = _list_parts(values)
    i_off, i_flat = _list_parts(indices)
    lengths = np.diff(v_off)
    sizes = np.where(dense, lengths, ids(size, width))
    present = np.asarray(column.is_valid())
    if (sizes[present] != width).any():
        bad = int(sizes[present][sizes[present] != width][0])
        raise ConfigError(f"{what} must have size {width}, found one of size {bad}")
    data = np.array(v_flat.to_numpy(zero_copy_only=False), dtype=dtype)  # writable: summed below
    row = np.repeat(np.arange(n), lengths)
    within = np.arange(data.size) - np.repeat(v_off[:-1], lengths)
    cols = within.copy()
    sparse_entries = ~dense[row]
    if sparse_entries.any():
        positions = i_off[:-1][row[sparse_entries]] + within[sparse_entries]
        cols[sparse_entries] = i_flat.to_numpy(zero_copy_only=False)[positions]
    out = sp.csr_matrix((data, cols, v_off), shape=(n, width), dtype=dtype)
    out.sum_duplicates()
    out.eliminate_zeros()  # a dense vector's zeros
    return out


def lists_to_csr(column, n_cols: int) -> sp.csr_matrix:
    """Rows of integer lists as a 0/1 CSR with `n_cols` columns: null lists, null
    elements and ids outside [0, n_cols) are left out, repeats counted once."""
    column = _flat(column)
    n = len(column)
    offsets, values = _list_parts(column)
    cols = ids(values)
    keep = (cols >= 0) & (cols < n_cols)
    row = np.repeat(np.arange(n), np.diff(offsets))[keep]
    out = sp.csr_matrix((np.ones(row.size, np.float32), (row, cols[keep])), shape=(n, n_cols))
    out.sum_duplicates()
    out.data[:] = 1
    return out


def vector_parts(column) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(present, each vector's size (-1 where null), every stored value as float64) of a
    column of Vectors, before any check or cast."""
    column = _flat(column)
    kind, size, _, values = column.flatten()  # nulls: null children
    offsets, flat = _list_parts(values)
    sizes = np.where(ids(kind, 0) == 1, np.diff(offsets), ids(size, -1))
    return (np.asarray(column.is_valid(), bool), sizes,
            flat.to_numpy(zero_copy_only=False).astype(np.float64, copy=False))


def rows_to_lists(matrix: np.ndarray, dtype: Any = np.float32) -> pa.Array:
    """A matrix as a column of its rows (`array<float>`; float64: `array<double>`),
    without copying per row."""
    matrix = np.ascontiguousarray(matrix, dtype)
    offsets = np.arange(matrix.shape[0] + 1, dtype=np.int32) * matrix.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.ravel()))


def sparse_parts(batches):
    """mapInArrow: (id, vector) batches to SPARSE_PARTS rows, plain types the driver can
    take with toArrow (which fails on vectors with nulls)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        vectors = batch.column(1)
        present, sizes, _ = vector_parts(vectors)
        for w in np.unique(sizes[present]):  # one CSR per width: sizes are checked later
            rows = np.flatnonzero(present & (sizes == w))
            csr = vectors_to_csr(vectors.take(pa.array(rows)), int(w))
            yield pa.RecordBatch.from_arrays([
                pa.array(ids(batch.column(0))[rows]), pa.array(np.full(rows.size, w, np.int32)),
                pa.ListArray.from_arrays(pa.array(csr.indptr.astype(np.int32)),
                                         pa.array(csr.indices.astype(np.int32))),
                pa.ListArray.from_arrays(pa.array(csr.indptr.astype(np.int32)),
                                         pa.array(csr.data))],
                names=["id", "size", "indices", "values"])


def per_id_csr(table: pa.Table, n: int, what: str) -> sp.csr_matrix:
    """The rows of a `sparse_parts` output (id, size, indices, values) as an n-row CSR:
    row `id` holds its vector, ids without one (or outside [0, n)) are empty."""
    widths = np.unique(ids(table.column("size")))
    if widths.size > 1:
        raise ConfigError(f"vectors in {what} must all have one size, found {widths.tolist()}")
    width = int(widths[0]) if widths.size else 0
    offsets, flat = _list_parts(_flat(table.column("indices")))
    rows = ids(table.column("id"))
    counts = np.diff(offsets)
    data = _list_parts(_flat(table.column("values")))[1].to_numpy(zero_copy_only=False)
    entry_row = np.repeat(rows, counts)
    keep = (entry_row >= 0) & (entry_row < n)
    out = sp.csr_matrix((data[keep].astype(np.float32), (entry_row[keep], ids(flat)[keep])),
                        shape=(n, width), dtype=np.float32)
    out.sum_duplicates()
    return out
