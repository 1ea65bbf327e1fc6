"""`models.recommend.top_k` against a dense numpy reference written here: every score
of the n × m matrix, excluded entries set to -inf, a stable argsort of -score per row.

Factors with small integer values make float32 arithmetic exact, so the blocked GEMM and
the dense one agree to the bit and ties are frequent: ids and scores must then be equal,
ties broken the documented way (lower id first), for every block size."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from psframework import ConfigError
from models.recommend import block_rows, top_k


def dense_reference(queries, targets, k, target_bias=None, query_bias=None, exclude=None):
    scores = queries.astype(np.float64) @ targets.astype(np.float64).T
    if target_bias is not None:
        scores += target_bias
    if query_bias is not None:
        scores += np.asarray(query_bias, np.float64)[:, None]
    if exclude is not None:
        scores[sp.csr_matrix(exclude).nonzero()] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def integer_problem(rng, n, m, d, density):
    queries = rng.integers(-3, 4, (n, d)).astype(np.float32)
    targets = rng.integers(-3, 4, (m, d)).astype(np.float32)
    bias = rng.integers(-2, 3, m).astype(np.float32)
    exclude = sp.random(n, m, density, random_state=int(rng.integers(1 << 30)), format="csr")
    return queries, targets, bias, exclude


@pytest.mark.parametrize("rows_per_block", [1, 3, 17, 10_000])
@pytest.mark.parametrize("excluding", [False, True])
def test_blocks_equal_the_dense_reference_exactly(rows_per_block, excluding):
    rng = np.random.default_rng(rows_per_block)
    queries, targets, bias, exclude = integer_problem(rng, 61, 140, 6, 0.2)
    exclude = exclude if excluding else None
    memory = rows_per_block * 4 * targets.shape[0]
    assert block_rows(targets.shape[0], memory) == rows_per_block
    ids, scores = top_k(queries, targets, 10, target_bias=bias, exclude=exclude, memory=memory)
    want_ids, want_scores = dense_reference(queries, targets, 10, bias, exclude=exclude)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    if excluding:
        assert not np.take_along_axis(exclude.toarray(), ids, axis=1).any()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 40), d=st.integers(1, 4), k=st.integers(1, 50),
       density=st.sampled_from([0.0, 0.3, 0.9, 1.0]), rows=st.integers(1, 13),
       seed=st.integers(0, 2**16), query_bias=st.booleans())
def test_any_shape_equals_the_dense_reference(n, m, d, k, density, rows, seed, query_bias):
    """k beyond m, rows with everything excluded (they get -inf, lowest ids first), one
    row per block: all as the reference."""
    rng = np.random.default_rng(seed)
    queries, targets, bias, exclude = integer_problem(rng, n, m, d, density)
    qb = rng.integers(-2, 3, n).astype(np.float32) if query_bias else None
    ids, scores = top_k(queries, targets, k, target_bias=bias, query_bias=qb,
                        exclude=exclude, memory=rows * 4 * m)
    want_ids, want_scores = dense_reference(queries, targets, min(k, m), bias, qb, exclude)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)


def test_float_factors_match_to_float_tolerance():
    """With real-valued factors only rounding differs: the scores chosen are the
    reference's top scores, and each id carries its own reference score."""
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((300, 16), dtype=np.float32)
    targets = rng.standard_normal((2_000, 16), dtype=np.float32)
    bias = rng.standard_normal(2_000, dtype=np.float32)
    exclude = sp.random(300, 2_000, 0.05, random_state=3, format="csr")
    ids, scores = top_k(queries, targets, 20, target_bias=bias, exclude=exclude,
                        memory=37 * 4 * 2_000)
    _, want = dense_reference(queries, targets, 20, bias, exclude=exclude)
    np.testing.assert_allclose(scores, want, atol=1e-4)
    own = np.einsum("nd,nkd->nk", queries.astype(np.float64), targets[ids].astype(np.float64))
    np.testing.assert_allclose(scores, own + bias[ids], atol=1e-4)


def test_nan_scores_count_as_minus_infinity():
    queries = np.ones((1, 1), np.float32)
    targets = np.array([[1.0], [np.nan], [3.0], [2.0]], np.float32)
    ids, scores = top_k(queries, targets, 4)
    np.testing.assert_array_equal(ids, [[2, 3, 0, 1]])
    np.testing.assert_array_equal(scores, [[3.0, 2.0, 1.0, -np.inf]])


def test_bad_input_is_refused_with_what_to_fix():
    q, t = np.zeros((3, 4), np.float32), np.zeros((5, 4), np.float32)
    with pytest.raises(ConfigError, match="share d"):
        top_k(q, np.zeros((5, 3)), 2)
    with pytest.raises(ConfigError, match="positive integer"):
        top_k(q, t, 0)
    with pytest.raises(ConfigError, match="one value per target"):
        top_k(q, t, 2, target_bias=np.zeros(4))
    with pytest.raises(ConfigError, match=r"3 × 5"):
        top_k(q, t, 2, exclude=sp.csr_matrix((3, 6)))
    assert top_k(np.zeros((0, 4)), t, 2)[0].shape == (0, 2)
