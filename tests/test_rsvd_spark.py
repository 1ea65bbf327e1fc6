"""RandomizedSVD through Spark (`RandomizedSVD(...).run(df)`) on the real local
SparkSession: its singular values and vectors against numpy's exact SVD (within the
error the matrix's spectral gap and the power iterations allow), the same result as the
local `randomized_svd` whatever the row blocks, input partitions and parameter servers,
row vectors as entries, duplicate entries and empty rows and columns, the passes and the
bytes they move, both Spark modes, and bad input and params refused naming the column or
the param.

The matrix: 200 × 120, a planted rank-5 part (singular values 50 … 21 on disjoint blocks
of rows and columns) plus sparse noise (the bulk at ≈ 2), about 5,000 entries, values
rounded to float32 so that row vectors (which `psframework.spark.arrow` reads as float32,
see `test_row_vectors_keep_float64_values`) carry the same matrix as entries. Most runs
are in separate mode (conftest's `secret_cluster`), which starts no servers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T
from scipy.linalg import subspace_angles

from psframework import ConfigError
from models.rsvd import RandomizedSVD, randomized_svd

M, N, K, OVERSAMPLE, POWER_ITER, SEED = 200, 120, 5, 10, 2, 7
WIDTH = min(K + OVERSAMPLE, M, N)
PLANTED = np.array([50.0, 40.0, 32.0, 26.0, 21.0])
PASSES = ["A·Ω", "Aᵀ·Q", "A·Q_n", "Aᵀ·Q", "A·Q_n", "Aᵀ·Q"]  # 2 (POWER_ITER + 1)


def planted_matrix(seed: int = 0) -> sp.coo_matrix:
    rng = np.random.default_rng(seed)
    rows = np.array_split(rng.permutation(M)[:150], K)
    cols = np.array_split(rng.permutation(N)[:100], K)
    A = np.zeros((M, N))
    for s, r, c in zip(PLANTED, rows, cols):
        a, b = rng.normal(size=r.size), rng.normal(size=c.size)
        A[np.ix_(r, c)] += s * np.outer(a / np.linalg.norm(a), b / np.linalg.norm(b))
    noise = rng.random((M, N)) < 0.1
    A[noise] += rng.normal(0, 0.25, noise.sum())
    return sp.coo_matrix(A.astype(np.float32).astype(np.float64))


@pytest.fixture(scope="module")
def planted():
    A = planted_matrix()
    u, s, vt = np.linalg.svd(A.toarray())
    return SimpleNamespace(A=A, u=u, s=s, v=vt.T)


@pytest.fixture(scope="module")
def local(planted):
    """The sequential reference: the local API on an embedded cluster, same algorithm
    params."""
    U, s, Vt = randomized_svd(planted.A, K, oversample=OVERSAMPLE, power_iter=POWER_ITER,
                              seed=SEED)
    return SimpleNamespace(U=U, s=s, V=Vt.T)


def entries(spark, A: sp.coo_matrix, partitions: int | None = None, id_type=np.int64,
            more: list[tuple] = ()):
    """A's (row, col, value) entries (plus `more`) in `partitions` input partitions."""
    rows = np.concatenate([A.row, [r for r, _, _ in more]]).astype(id_type)
    cols = np.concatenate([A.col, [c for _, c, _ in more]]).astype(id_type)
    values = np.concatenate([A.data, [v for _, _, v in more]])
    df = spark.createDataFrame(pa.table({"row": rows, "col": cols, "value": values}))
    return df if partitions is None else df.repartition(partitions)


def vectors(spark, A: sp.coo_matrix, partitions: int):
    """A's rows as (row double, SparseVector) in shuffled order."""
    csr = A.tocsr()
    order = np.random.default_rng(1).permutation(csr.shape[0])
    data = [(float(r), Vectors.sparse(csr.shape[1], csr[r].indices.tolist(),
                                      csr[r].data.tolist())) for r in order]
    schema = T.StructType([T.StructField("row", T.DoubleType()),
                           T.StructField("features", VectorUDT())])
    return spark.createDataFrame(spark.sparkContext.parallelize(data, partitions), schema)


def svd(df, **params):
    params = {"k": K, "oversample": OVERSAMPLE, "powerIter": POWER_ITER, "seed": SEED,
              **params}
    return RandomizedSVD(**params).run(df)


def collected(frame, count: int) -> np.ndarray:
    """A (id, vector) DataFrame as a count × k matrix; its ids are 0..count-1, once each."""
    rows = frame.collect()
    ids = np.array([r.id for r in rows])
    assert frame.schema.simpleString() == "struct<id:bigint,vector:vector>"
    assert sorted(ids.tolist()) == list(range(count))
    out = np.zeros((count, len(rows[0].vector)))
    out[ids] = [r.vector.toArray() for r in rows]
    return out


def result(run, m: int = M, n: int = N) -> SimpleNamespace:
    return SimpleNamespace(
        s=run.s, history=run.history,
        U=None if run.U is None else collected(run.U, m),
        V=None if run.V is None else collected(run.V, n))


# -- the runs the tests share (each a module fixture: run once, when first needed) -------
@pytest.fixture(scope="module")
def integrated_one(secret_spark, planted):
    """Integrated mode, 1 server; the default blocks (4: local[4]'s parallelism), from
    the default input partitions."""
    return result(svd(entries(secret_spark, planted.A), numParameterServers=1))


@pytest.fixture(scope="module")
def integrated_three(secret_spark, planted):
    """Integrated mode, 3 servers; 3 blocks from 5 partitions."""
    return result(svd(entries(secret_spark, planted.A, 5), numParameterServers=3,
                      numBlocks=3))


@pytest.fixture(scope="module")
def one_block(secret_spark, secret_cluster, planted):
    """Separate mode; the whole matrix one block, from one partition."""
    return result(svd(entries(secret_spark, planted.A, 1), numBlocks=1,
                      parameterServerHost=secret_cluster.address))


# -- accuracy and independence ------------------------------------------------------------
def test_singular_values_and_vectors_match_numpys_exact_svd(integrated_one, planted):
    """Halko et al. (and Gu 2015): with a sketch of w = k + p columns and q power
    iterations, the subspaces' angles shrink as g^(2q+1) and the singular values' relative
    errors as g^(4q+2), g = s_(w+1) / s_k, times a constant of the Gaussian test matrix
    (measured 1-3 on this matrix, seeds 0 and 7; allowed 100). And a Ritz value never exceeds the true
    one: s_j(QᵀA) <= s_j(A)."""
    exact, got = planted.s, integrated_one
    g = exact[WIDTH] / exact[K - 1]
    assert g < 0.1  # the matrix's gap: what makes the bounds below small
    assert got.s.shape == (K,) and np.all(np.diff(got.s) <= 0)
    np.testing.assert_allclose(got.s, exact[:K], rtol=100 * g ** (4 * POWER_ITER + 2))
    assert np.all(got.s <= exact[:K] * (1 + 1e-12))
    np.testing.assert_allclose(got.s, PLANTED, rtol=0.01)  # the planted spectrum, noisy
    assert got.U.shape == (M, K) and got.V.shape == (N, K)
    angles = 100 * g ** (2 * POWER_ITER + 1)
    assert subspace_angles(got.U, planted.u[:, :K]).max() < angles
    assert subspace_angles(got.V, planted.v[:, :K]).max() < angles
    np.testing.assert_allclose(got.U.T @ got.U, np.eye(K), atol=1e-12)
    np.testing.assert_allclose(got.V.T @ got.V, np.eye(K), atol=1e-12)
    # A V - U diag(s) = (I - QQᵀ) A V, each column about s_j · sin(angle): U and V pair up
    # (a swapped or sign-flipped pair would be off by ~ s_j)
    np.testing.assert_allclose(planted.A @ got.V, got.U * got.s, atol=2 * exact[0] * angles)


@pytest.mark.parametrize("run", ["integrated_one", "integrated_three", "one_block"])
def test_the_result_is_the_local_randomized_svd_whatever_the_blocks_and_servers(
        request, run, local):
    """1, 3 (uneven) and 4 (default) row blocks; 1 and 3 servers and a separate cluster
    of 2; 1, 5 and the default input partitions: all the local API's result (2 shards,
    2 threads' blocks), to rounding, signs included. (Blocks of 7 rows, 29 tasks a pass,
    agreed as well but took 15-35 s.)"""
    got = request.getfixturevalue(run)
    np.testing.assert_allclose(got.s, local.s, rtol=1e-9)
    np.testing.assert_allclose(got.U, local.U, atol=1e-9)
    np.testing.assert_allclose(got.V, local.V, atol=1e-9)


def test_row_vectors_equal_entries(secret_spark, secret_cluster, planted, one_block):
    got = result(svd(vectors(secret_spark, planted.A, 3), featuresCol="features",
                     numBlocks=1, parameterServerHost=secret_cluster.address))
    np.testing.assert_allclose(got.s, one_block.s, rtol=1e-12)
    np.testing.assert_allclose(got.U, one_block.U, atol=1e-12)
    np.testing.assert_allclose(got.V, one_block.V, atol=1e-12)


def test_row_vectors_keep_float64_values(secret_spark, secret_cluster):
    """diag(3, 2, 0.1): a sketch as wide as the matrix gives its exact singular values."""
    df = vectors(secret_spark, sp.coo_matrix(np.diag([3.0, 2.0, 0.1])), 1)
    got = svd(df, k=3, powerIter=0, featuresCol="features",
              parameterServerHost=secret_cluster.address)
    np.testing.assert_allclose(got.s, [3.0, 2.0, 0.1], rtol=1e-12)  # float32: 0.1 + 1.5e-9


def test_duplicates_add_up_and_empty_rows_and_columns_are_zero(secret_spark, secret_cluster,
                                                               planted):
    """Every entry split in two (0.25 v and the rest), row 10 and column 7 emptied, an
    explicit 0 at (10, 3), numRows/numCols 5 and 4 beyond the data, ids as doubles (as
    StringIndexer gives them): the SVD of the summed 205 × 124 matrix."""
    keep = (planted.A.row != 10) & (planted.A.col != 7)
    A = sp.coo_matrix((planted.A.data[keep], (planted.A.row[keep], planted.A.col[keep])),
                      shape=planted.A.shape)
    quarter = A.data * 0.25
    split = sp.coo_matrix((np.concatenate([quarter, A.data - quarter]),
                           (np.tile(A.row, 2), np.tile(A.col, 2))), shape=A.shape)
    m, n = M + 5, N + 4
    summed = sp.coo_matrix((split.data, (split.row, split.col)), shape=(m, n)).tocsr()
    summed.sum_duplicates()
    got = result(svd(entries(secret_spark, split, 4, np.float64, [(10, 3, 0.0)]),
                     numRows=m, numCols=n, parameterServerHost=secret_cluster.address), m, n)
    u, exact, vt = np.linalg.svd(summed.toarray())
    g = exact[WIDTH] / exact[K - 1]
    np.testing.assert_allclose(got.s, exact[:K], rtol=100 * g ** (4 * POWER_ITER + 2))
    angles = 100 * g ** (2 * POWER_ITER + 1)
    assert subspace_angles(got.U, u[:, :K]).max() < angles
    assert subspace_angles(got.V, vt[:K].T).max() < angles
    empty_rows, empty_cols = [10, *range(M, m)], [7, *range(N, n)]
    np.testing.assert_allclose(got.U[empty_rows], 0, atol=1e-12)
    np.testing.assert_allclose(got.V[empty_cols], 0, atol=1e-12)
    Ul, sl, Vtl = randomized_svd(summed, K, oversample=OVERSAMPLE, power_iter=POWER_ITER,
                                 seed=SEED)
    np.testing.assert_allclose(got.s, sl, rtol=1e-9)
    np.testing.assert_allclose(got.U, Ul, atol=1e-9)
    np.testing.assert_allclose(got.V, Vtl.T, atol=1e-9)


# -- what is computed, and what it costs --------------------------------------------------
def bytes_of_one_block(A: sp.coo_matrix, width: int) -> tuple[int, int]:
    """(forward pull = backward push, forward push = backward pull) of a block holding all
    of A: the rows of `right` at its distinct columns, of `left` at its nonempty rows."""
    nonzero = A.data != 0
    return (np.unique(A.col[nonzero]).size * width * 8,
            np.unique(A.row[nonzero]).size * width * 8)


def check_history(history: list[dict], names: list[str], forward: tuple[int, int]) -> None:
    assert [h["pass"] for h in history] == names
    for h in history:
        pulled, pushed = forward if h["pass"] != "Aᵀ·Q" else forward[::-1]
        assert (h["bytes_pulled"], h["bytes_pushed"]) == (pulled, pushed), h
        assert h["seconds"] > 0


def test_history_counts_the_passes_and_the_bytes_they_move(one_block, integrated_one,
                                                           integrated_three, planted):
    cols, rows = bytes_of_one_block(planted.A, WIDTH)
    check_history(one_block.history, PASSES, (cols, rows))
    # more blocks: each row is in one block, so the rows of `left` move as with one; each
    # block pulls (and pushes) the rows of `right` at its own columns: 1 to 4 times as many
    for run, blocks in ((integrated_one, 4), (integrated_three, 3)):
        assert [h["pass"] for h in run.history] == PASSES
        forward, backward = run.history[0], run.history[1]
        assert forward["bytes_pushed"] == backward["bytes_pulled"] == rows
        assert forward["bytes_pulled"] == backward["bytes_pushed"]
        assert cols <= forward["bytes_pulled"] <= blocks * cols
        for h in run.history[2:]:
            same = forward if h["pass"] == "A·Q_n" else backward
            assert (h["bytes_pulled"], h["bytes_pushed"]) == (same["bytes_pulled"],
                                                              same["bytes_pushed"])


def test_without_left_vectors_U_is_none(secret_spark, secret_cluster, planted):
    """powerIter=0 (2 passes) and a sketch as wide as the matrix (oversample 200: width
    min(m, n) = 120): exact singular values and V, whatever the test matrix."""
    got = result(svd(entries(secret_spark, planted.A, 1), powerIter=0, oversample=200,
                     numBlocks=1, computeLeftSingularVectors=False,
                     parameterServerHost=secret_cluster.address))
    assert got.U is None
    np.testing.assert_allclose(got.s, planted.s[:K], rtol=1e-10)
    signs = np.sign((got.V * planted.v[:, :K]).sum(axis=0))
    np.testing.assert_allclose(got.V, planted.v[:, :K] * signs, atol=1e-9)
    check_history(got.history, PASSES[:2], bytes_of_one_block(planted.A, min(M, N)))
    _, _, Vtl = randomized_svd(planted.A, K, oversample=200, power_iter=0, seed=SEED)
    np.testing.assert_allclose(got.V, Vtl.T, atol=1e-9)


def test_without_right_vectors_V_is_none(secret_spark, secret_cluster, planted):
    got = result(svd(entries(secret_spark, planted.A, 2), powerIter=1,
                     computeRightSingularVectors=False,
                     parameterServerHost=secret_cluster.address))
    assert got.V is None and [h["pass"] for h in got.history] == PASSES[:4]
    Ul, sl, _ = randomized_svd(planted.A, K, oversample=OVERSAMPLE, power_iter=1, seed=SEED)
    np.testing.assert_allclose(got.s, sl, rtol=1e-9)
    np.testing.assert_allclose(got.U, Ul, atol=1e-9)


# -- refusals --------------------------------------------------------------------------------
ENTRIES = [(0, 0, 1.0), (1, 1, 2.0), (2, 2, 3.0), (3, 0, 1.5)]  # 4 × 3
ENTRY_SCHEMA = "row long, col long, value double"
VECTOR_SCHEMA = T.StructType([T.StructField("row", T.DoubleType()),
                              T.StructField("features", VectorUDT())])
VECTORS = [(0.0, Vectors.sparse(3, [0], [1.0])), (1.0, Vectors.sparse(3, [1], [2.0]))]


@pytest.mark.parametrize("data, schema, params, match", [
    (ENTRIES, ENTRY_SCHEMA, {"k": 4}, r"^k = 4 .*min\(4, 3\) = 3.*k <= 3"),
    (ENTRIES, ENTRY_SCHEMA, {"numRows": 3}, r"column 'row' holds index 3.*numRows"),
    (ENTRIES, ENTRY_SCHEMA, {"numCols": 2}, r"column 'col' holds index 2.*numCols"),
    (ENTRIES + [(1, 2, None)], ENTRY_SCHEMA, {}, "column 'value' .*null"),
    (ENTRIES + [(1, 2, float("nan"))], ENTRY_SCHEMA, {}, "column 'value' .*NaN"),
    (ENTRIES + [(1, 2, float("inf"))], ENTRY_SCHEMA, {}, "column 'value' .*infinite"),
    (ENTRIES + [(-1, 2, 1.0)], ENTRY_SCHEMA, {}, "column 'row'.*>= 0"),
    (ENTRIES + [(None, 2, 1.0)], ENTRY_SCHEMA, {}, "column 'row'.*nulls"),
    ([(0.0, 0.5, 1.0), (1.0, 1.0, 1.0)], "row double, col double, value double", {},
     "column 'col'.*integers"),
    ([(0, 0, 1.0), (1, 1, 2.0)], "i long, j long, v double",
     {"rowCol": "i", "colCol": "j", "valueCol": "v", "numRows": 1}, "column 'i' holds index 1"),
    (VECTORS + [(2.0, Vectors.sparse(3, [2], [float("nan")]))], VECTOR_SCHEMA,
     {"featuresCol": "features"}, "column 'features' .*NaN"),
    (VECTORS + [(2.0, Vectors.sparse(4, [2], [1.0]))], VECTOR_SCHEMA,
     {"featuresCol": "features"}, r"'features' holds vectors of sizes \[3, 4\]"),
    (ENTRIES, ENTRY_SCHEMA, {"valueCol": "rating"}, "valueCol.*'rating'"),
    (VECTORS, VECTOR_SCHEMA, {"featuresCol": "vector"}, "featuresCol.*'vector'"),
    # k = 4 > min(m, n) is refused after the matrix is read: the row ids come first
    (VECTORS + [(1.5, Vectors.sparse(3, [2], [1.0]))], VECTOR_SCHEMA,
     {"featuresCol": "features", "k": 4}, "column 'row'.*integers"),
    (VECTORS + [(float("nan"), Vectors.sparse(3, [2], [1.0]))], VECTOR_SCHEMA,
     {"featuresCol": "features"}, "column 'row'.*integers"),
], ids=["k-above-min-m-n", "row-beyond-numRows", "col-beyond-numCols", "null-value",
        "nan-value", "inf-value", "negative-row", "null-row", "fractional-col",
        "renamed-columns", "nan-in-vector", "vector-size", "missing-valueCol",
        "missing-featuresCol", "fractional-row-of-vector", "nan-row-of-vector"])
def test_bad_input_is_refused_naming_the_column_or_param(secret_spark, secret_cluster, data,
                                                         schema, params, match):
    df = secret_spark.createDataFrame(data, schema)
    params = {"k": 2, "oversample": 1, "powerIter": 0,
              "parameterServerHost": secret_cluster.address, **params}
    with pytest.raises(ConfigError, match=match):
        RandomizedSVD(**params).run(df)


@pytest.mark.parametrize("bad, match", [
    ({"k": 0}, "param k"), ({"oversample": -1}, "param oversample"),
    ({"powerIter": -1}, "param powerIter"), ({"numBlocks": 0}, "param numBlocks"),
    ({"numRows": 0}, "param numRows"), ({"numParameterServers": 0}, "numParameterServers"),
    ({"parameterServerHost": "nowhere"}, "parameterServerHost")])
def test_bad_params_are_refused_before_any_job(secret_spark, bad, match):
    df = secret_spark.createDataFrame(ENTRIES, ENTRY_SCHEMA)
    tracker = secret_spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup(None))
    with pytest.raises(ConfigError, match=match):
        RandomizedSVD(**bad).run(df)
    assert len(tracker.getJobIdsForGroup(None)) == before


# -- both modes ----------------------------------------------------------------------------
def test_separate_mode_is_integrated_mode_and_leaves_no_model(one_block, integrated_one,
                                                              secret_cluster):
    """Last in this module: every separate-mode run above (refusals included) destroyed
    its model, and U and V, read after that, were already in Spark."""
    np.testing.assert_allclose(one_block.s, integrated_one.s, rtol=1e-9)
    np.testing.assert_allclose(one_block.U, integrated_one.U, atol=1e-9)
    np.testing.assert_allclose(one_block.V, integrated_one.V, atol=1e-9)
    client = secret_cluster.client()
    try:
        assert [m["name"] for m in client.status()["models"]] == []
    finally:
        client.close()
