"""psframework.spark.arrow and models.frames against references built here, row by row
in plain Python: Spark's Vector struct (sparse and dense, nulls, sliced batches) to CSR,
integer lists to CSR, and top_k answers to lists of structs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from psframework import ConfigError
from psframework.spark.arrow import lists_to_csr, vectors_to_csr
from models.frames import ranked_lists

VECTOR = pa.struct([pa.field("type", pa.int8(), nullable=False), ("size", pa.int32()),
                    ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float64()))])


def sparse(size, indices, values):
    return {"type": 0, "size": size, "indices": indices, "values": values}


def dense(values):
    return {"type": 1, "size": None, "indices": None, "values": values}


def as_dense(rows, width):
    out = np.zeros((len(rows), width), np.float32)
    for r, v in enumerate(rows):
        if v is None:
            continue
        if v["type"] == 1:
            out[r] = v["values"]
        else:
            for i, x in zip(v["indices"], v["values"]):
                out[r, i] += x
    return out


ROWS = [sparse(5, [1, 4], [2.0, -1.0]), dense([0.0, 3.0, 0.0, 0.0, 7.5]), None,
        sparse(5, [], []), dense([1.0, 1.0, 1.0, 1.0, 1.0]), sparse(5, [0], [0.5])]


@pytest.mark.parametrize("start,stop", [(0, 6), (1, 5), (3, 6), (4, 4)])
def test_vectors_of_both_kinds_become_the_rows_they_describe(start, stop):
    column = pa.array(ROWS, VECTOR).slice(start, stop - start)  # batches can be slices
    got = vectors_to_csr(column, 5, nulls="empty")
    np.testing.assert_array_equal(got.toarray(), as_dense(ROWS[start:stop], 5))
    assert got.dtype == np.float32 and got.has_sorted_indices


def test_null_or_wrong_sized_vectors_are_refused():
    with pytest.raises(ConfigError, match="is null"):
        vectors_to_csr(pa.array(ROWS, VECTOR), 5)
    with pytest.raises(ConfigError, match="size 5, found one of size 3"):
        vectors_to_csr(pa.array([sparse(5, [0], [1.0]), dense([1.0, 2.0, 3.0])], VECTOR), 5)


def test_integer_lists_become_0_1_rows_leaving_out_nulls_and_strangers():
    rows = [[3, 1, 3], None, [], [None, 0, 9, -1], [2]]
    column = pa.array(rows, pa.list_(pa.int64())).slice(1, 4)
    got = lists_to_csr(column, 4).toarray()
    want = np.zeros((4, 4), np.float32)
    for r, items in enumerate(rows[1:]):
        for i in items or []:
            if i is not None and 0 <= i < 4:
                want[r, i] = 1
    np.testing.assert_array_equal(got, want)


def test_ranked_lists_keep_the_order_and_drop_what_was_left_out():
    targets = np.array([[4, 2, 0], [1, 3, 5]])
    scores = np.array([[2.5, 1.0, -np.inf], [0.5, -np.inf, -np.inf]], np.float32)
    got = ranked_lists(targets, scores, ("item", "rating")).to_pylist()
    assert got == [[{"item": 4, "rating": 2.5}, {"item": 2, "rating": 1.0}],
                   [{"item": 1, "rating": 0.5}]]
