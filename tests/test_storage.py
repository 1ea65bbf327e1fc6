"""Storage: partitioners, initializers and push aggregation, in one process (table specs:
test_tablespec.py)."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psframework.errors import DTypeError, ShapeError
from psframework.storage import Partition, Partitioner, TableSpec, init
from psframework.storage.aggregate import BUILTIN as AGGREGATORS, finite
from psframework.storage.table import TABLE_DTYPES

FEW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- partitioners ---------------------------------------------------------------------

def held(p: Partitioner, part: int) -> np.ndarray:
    """Global indices of `part`, in local order."""
    return np.arange(p.length)[p.indices(part)]


partitioners = st.builds(Partitioner, kind=st.sampled_from(["range", "cyclic"]),
                         length=st.integers(0, 200), parts=st.integers(1, 12))


@FEW
@given(p=partitioners)
def test_every_index_has_exactly_one_owner(p):
    owners = np.zeros(p.length, dtype=int)
    for part in range(p.parts):
        h = held(p, part)
        assert h.size == p.size(part)
        owners[h] += 1
    assert (owners == 1).all()
    assert sum(p.size(q) for q in range(p.parts)) == p.length
    sizes = [p.size(q) for q in range(p.parts)]
    assert max(sizes) - min(sizes) <= 1  # balanced to within one index


@FEW
@given(p=partitioners)
def test_layouts_are_as_documented(p):
    for part in range(p.parts):
        h = held(p, part)
        if p.kind == "cyclic":
            np.testing.assert_array_equal(h, [i for i in range(p.length) if i % p.parts == part])
        else:  # one contiguous block, blocks in partition order
            assert (np.diff(h) == 1).all()
            before = sum(p.size(q) for q in range(part))
            assert h.size == 0 or h[0] == before


@st.composite
def split_requests(draw):
    p = draw(partitioners.filter(lambda p: p.length > 0))
    idx = draw(st.lists(st.integers(0, p.length - 1), max_size=60))
    if draw(st.booleans()):  # plenty of duplicates
        idx = idx + idx[: len(idx) // 2]
    if draw(st.booleans()):
        idx = sorted(idx)
    return p, np.array(idx, dtype=np.int64)


@FEW
@given(req=split_requests())
def test_split_reconstructs_the_request(req):
    p, idx = req
    groups = p.split(idx)
    seen = np.zeros(idx.size, dtype=int)
    rebuilt = np.full(idx.size, -1, dtype=np.int64)
    parts = [part for part, _, _ in groups]
    assert len(set(parts)) == len(parts)
    for part, pos, local in groups:
        local = np.asarray(local)
        assert 0 <= part < p.parts
        assert local.size == 0 or (local.min() >= 0 and local.max() < p.size(part))
        seen[pos] += 1
        rebuilt[pos] = held(p, part)[local]  # local index -> global via indices(part)
        if p.kind == "cyclic":
            np.testing.assert_array_equal(idx[pos] % p.parts, part)
            np.testing.assert_array_equal(local, idx[pos] // p.parts)
    assert (seen == 1).all()
    np.testing.assert_array_equal(rebuilt, idx)


def test_split_of_one_partition_avoids_index_arrays():
    p = Partitioner("range", 100, 4)
    ((part, pos, local),) = p.split(np.array([30, 26, 49, 25]))
    assert part == 1 and pos == slice(None)
    np.testing.assert_array_equal(local, [5, 1, 24, 0])


@pytest.mark.parametrize("kw", [dict(kind="hash", length=3, parts=1),
                                dict(kind="range", length=3, parts=0),
                                dict(kind="cyclic", length=-1, parts=2)])
def test_partitioner_rejects_bad_arguments(kw):
    with pytest.raises(ValueError):
        Partitioner(**kw)


# -- initializers ---------------------------------------------------------------------

def assemble(spec: dict, shape: tuple, dtype: str, axis: int, kind: str, parts: int) -> np.ndarray:
    p = Partitioner(kind, shape[axis], parts)
    full = np.full(shape, np.nan if dtype.startswith("float") else -1, dtype=dtype)
    for part in range(parts):
        local = init.materialize(spec, shape, np.dtype(dtype), axis, p, part)
        expect = list(shape)
        expect[axis] = p.size(part)
        assert local.shape == tuple(expect) and local.dtype == dtype
        if axis == 0:
            full[p.indices(part)] = local
        else:
            full[:, p.indices(part)] = local
    return full


SHAPES = [((7, 3), 0), ((7, 3), 1), ((5, 11), 1), ((2500, 4), 0), ((2500, 4), 1),
          ((2049,), 0), ((13,), 0)]


@pytest.mark.parametrize("shape, axis", SHAPES)
@pytest.mark.parametrize("spec", [init.uniform(-2, 3, seed=7), init.normal(1.0, 0.5, seed=3)],
                         ids=["uniform", "normal"])
def test_partitioned_init_equals_unpartitioned_bit_for_bit(spec, shape, axis):
    for dtype in ("float64", "float32"):
        whole = init.materialize(spec, shape, np.dtype(dtype), axis,
                                 Partitioner("range", shape[axis], 1), 0)
        assert whole.shape == shape and not np.isnan(whole).any()
        for kind in ("range", "cyclic"):
            for parts in (1, 2, 3, 5):
                got = assemble(spec, shape, dtype, axis, kind, parts)
                assert got.tobytes() == whole.tobytes(), (dtype, kind, parts)


def test_init_is_the_same_by_rows_and_by_columns():
    spec, shape = init.uniform(seed=11), (1500, 6)
    by_rows = assemble(spec, shape, "float64", 0, "cyclic", 3)
    by_cols = assemble(spec, shape, "float64", 1, "range", 2)
    assert by_rows.tobytes() == by_cols.tobytes()


def test_init_seed_decides_the_values():
    shape, p = (1200, 5), Partitioner("range", 1200, 1)
    a = init.materialize(init.normal(seed=1), shape, np.dtype("float64"), 0, p, 0)
    b = init.materialize(init.normal(seed=1), shape, np.dtype("float64"), 0, p, 0)
    c = init.materialize(init.normal(seed=2), shape, np.dtype("float64"), 0, p, 0)
    assert a.tobytes() == b.tobytes()
    assert (a != c).mean() > 0.99
    # blocks are independent draws, not one block repeated
    assert np.unique(a, axis=0).shape[0] == shape[0]


def test_init_distributions():
    p = Partitioner("cyclic", 4000, 3)
    u = np.concatenate([init.materialize(init.uniform(-1, 3, seed=5), (4000, 5), np.dtype("f8"),
                                         0, p, q) for q in range(3)])
    assert u.min() >= -1 and u.max() < 3
    assert abs(u.mean() - 1.0) < 0.05 and abs(u.std() - 4 / np.sqrt(12)) < 0.05
    n = init.materialize(init.normal(2.0, 0.5, seed=5), (4000, 5), np.dtype("f8"), 0, p, 1)
    assert abs(n.mean() - 2.0) < 0.03 and abs(n.std() - 0.5) < 0.03
    ints = init.materialize(init.uniform(0, 10, seed=1), (300,), np.dtype("int32"), 0,
                            Partitioner("range", 300, 2), 1)
    assert ints.dtype == np.int32 and ints.min() >= 0 and ints.max() <= 9


@pytest.mark.parametrize("axis", [0, 1])
def test_zeros_and_constant(axis):
    p = Partitioner("cyclic", 7, 3)
    z = init.materialize(init.zeros(), (7, 7), np.dtype("int64"), axis, p, 1)
    assert z.shape == ((2, 7) if axis == 0 else (7, 2)) and z.dtype == np.int64
    assert not z.any()
    c = init.materialize(init.constant(2.5), (7, 7), np.dtype("float32"), axis, p, 0)
    assert c.shape == ((3, 7) if axis == 0 else (7, 3)) and (c == np.float32(2.5)).all()


def test_partition_create_matches_the_whole_table():
    spec = TableSpec("w", (30, 8), "float32", partition_by="cols", partitioner="cyclic",
                     init=init.uniform(seed=4)).placed(3).validate()
    whole = init.materialize(spec.init, spec.shape, np.dtype("float32"), 1,
                             Partitioner("cyclic", 8, 1), 0)
    for part in range(3):
        data = Partition.create(spec, part, AGGREGATORS["add"]).data
        np.testing.assert_array_equal(data, whole[:, part::3])


# -- push aggregation -----------------------------------------------------------------

@numba.njit
def twice_plus(stored, pushed):  # order-dependent: catches a kernel that reorders pushes
    return 2 * stored + pushed


def reference(data, index, values, how):
    out = data.copy()
    if how == "add":
        np.add.at(out, index, values)
    elif how == "min":
        np.minimum.at(out, index, values)
    elif how == "max":
        np.maximum.at(out, index, values)
    else:
        for i in range(len(values)):
            key = tuple(ix[i] for ix in index) if isinstance(index, tuple) else index[i]
            out[key] = values[i] if how == "replace" else 2 * out[key] + values[i]
    return out


COMBINERS = {**AGGREGATORS, "twice_plus": twice_plus}


def partition(data: np.ndarray, how: str) -> Partition:
    spec = TableSpec("t", data.shape, data.dtype.name, parts=1)
    return Partition(spec, 0, data.copy(), COMBINERS[how])


@st.composite
def pushes(draw):
    dtype = draw(st.sampled_from(TABLE_DTYPES))
    how = draw(st.sampled_from(sorted(COMBINERS)))
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(0, 4))  # cols 0: a vector
    shape = (rows, cols) if cols else (rows,)
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    data = rng.integers(-50, 50, size=shape).astype(dtype)
    n = draw(st.integers(0, 15))
    idx = rng.integers(0, rows, size=n)  # duplicates are likely with so few rows
    return dtype, how, data, idx, rng


@FEW
@given(case=pushes())
def test_push_rows_matches_numpy(case):
    dtype, how, data, idx, rng = case
    values = rng.integers(-50, 50, size=(idx.size,) + data.shape[1:]).astype(dtype)
    p = partition(data, how)
    p.push_rows(idx, values)
    np.testing.assert_array_equal(p.data, reference(data, idx, values, how))
    assert p.data.dtype == dtype


@FEW
@given(case=pushes())
def test_push_elems_matches_numpy(case):
    dtype, how, data, idx, rng = case
    values = rng.integers(-50, 50, size=idx.size).astype(dtype)
    p = partition(data, how)
    if data.ndim == 2:
        cols = rng.integers(0, data.shape[1], size=idx.size)
        p.push_elems(idx, cols, values)
        expect = reference(data, (idx, cols), values, how)
    else:
        p.push_elems(idx, np.zeros_like(idx), values)
        expect = reference(data, idx, values, how)
    np.testing.assert_array_equal(p.data, expect)


def test_duplicate_adds_accumulate():
    p = partition(np.zeros((3, 2), np.float32), "add")
    p.push_rows(np.array([1, 1, 1]), np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(p.data, [[0, 0], [3, 3], [0, 0]])
    p.push_elems(np.array([0, 0]), np.array([1, 1]), np.array([2, 5], np.float32))
    assert p.data[0, 1] == 7


@pytest.mark.parametrize("index_dtype", [np.int32, np.uint32, np.uint64])
def test_other_integer_index_dtypes(index_dtype):
    data = np.arange(12, dtype=np.float64).reshape(4, 3)
    p = partition(data, "add")
    idx = np.array([3, 0, 3], dtype=index_dtype)
    p.push_rows(idx, np.ones((3, 3)))
    np.testing.assert_array_equal(p.data, reference(data, idx.astype(np.int64), np.ones((3, 3)),
                                                    "add"))
    np.testing.assert_array_equal(p.pull_rows(idx), p.data[[3, 0, 3]])


def test_pulls_match_numpy_indexing():
    data = np.arange(20, dtype=np.int64).reshape(5, 4)
    p = partition(data, "add")
    np.testing.assert_array_equal(p.pull_rows(np.array([4, 0, 4])), data[[4, 0, 4]])
    np.testing.assert_array_equal(p.pull_elems(np.array([1, 3]), np.array([3, 0])), [7, 12])
    v = partition(np.arange(6.0), "add")
    np.testing.assert_array_equal(v.pull_elems(np.array([5, 2]), np.array([0, 0])), [5.0, 2.0])


def bad_push(p: Partition, kind: str, rows, values, cols=None):
    before = p.data.copy()
    with pytest.raises({"dtype": DTypeError, "shape": ShapeError}[kind]):
        if cols is None:
            p.push_rows(np.asarray(rows), values)
        else:
            p.push_elems(np.asarray(rows), np.asarray(cols), values)
    np.testing.assert_array_equal(p.data, before)  # refused pushes change nothing


def test_bad_pushes_raise_and_leave_data_unchanged():
    m = partition(np.arange(12, dtype=np.float32).reshape(4, 3), "add")
    v = partition(np.arange(5, dtype=np.int64), "add")
    bad_push(m, "dtype", [0], np.ones((1, 3), np.float64))
    bad_push(m, "dtype", [0], np.ones((1, 3), np.int32))
    bad_push(v, "dtype", [0], np.ones(1, np.int32))
    bad_push(m, "shape", [0, 1], np.ones((2, 4), np.float32))
    bad_push(m, "shape", [0, 1], np.ones((3, 3), np.float32))
    bad_push(m, "shape", [0], np.ones(3, np.float32))
    bad_push(v, "shape", [0, 1], np.ones(3, np.int64))
    bad_push(m, "shape", [[0, 1]], np.ones((2, 3), np.float32))  # 2-d rows
    bad_push(m, "shape", [0.0], np.ones((1, 3), np.float32))  # float indices
    bad_push(m, "shape", [0, 1], np.ones(2, np.float32), cols=[0])  # rows vs cols
    for rows in ([0, 5], [-1], [1, 2, 99]):  # out of range: applied neither in part nor in full
        bad_push(m, "shape", rows, np.ones((len(rows), 3), np.float32))
        bad_push(v, "shape", rows, np.ones(len(rows), np.int64))
        bad_push(m, "shape", rows, np.ones(len(rows), np.float32), cols=[0] * len(rows))
    bad_push(m, "shape", [0, 1], np.ones(2, np.float32), cols=[0, 3])
    bad_push(m, "shape", [0, 1], np.ones(2, np.float32), cols=[-1, 0])
    with pytest.raises(ShapeError):
        m.pull_rows(np.array([4]))
    with pytest.raises(ShapeError):
        m.pull_elems(np.array([0]), np.array([3]))


# -- the shard's NaN/inf check ------------------------------------------------------------------
@FEW
@given(dtype=st.sampled_from(["float32", "float64"]), data=st.data())
def test_finite_agrees_with_numpy(dtype, data):
    from hypothesis.extra.numpy import arrays
    values = data.draw(arrays(dtype, st.integers(0, 300), elements=st.floats(
        allow_nan=True, allow_infinity=True, width=32 if dtype == "float32" else 64)))
    assert finite(values) == bool(np.isfinite(values).all())


def test_a_partition_refuses_nonfinite_pushes_unless_allowed():
    for allow, expect in ((False, DTypeError), (True, None)):
        spec = TableSpec("t", (4, 2), "float64", allow_nonfinite=allow, parts=1).validate()
        p = Partition.create(spec, 0, AGGREGATORS["add"])
        push = lambda: p.push_rows(np.array([1]), np.array([[1.0, np.nan]]))
        if expect:
            with pytest.raises(expect, match="allow_nonfinite"):
                push()
            np.testing.assert_array_equal(p.data, np.zeros((4, 2)))  # nothing applied
        else:
            push()
            np.testing.assert_array_equal(p.data[1], [1.0, np.nan])
