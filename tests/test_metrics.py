"""models.metrics against a plain brute-force reference written here, plus known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.metrics import (auc, evaluate, hit_rate_at_k, ndcg_at_k, precision_at_k,
                            recall_at_k)

NAMES = ("precision", "recall", "hit_rate", "ndcg", "auc")
FUNCTIONS = {"precision": precision_at_k, "recall": recall_at_k,
             "hit_rate": hit_rate_at_k, "ndcg": ndcg_at_k}


def reference(scores, test, train=None, k=10, exclude_train=True):
    """Per-user metrics by explicit sorting and by counting every positive/negative pair."""
    scores = np.asarray(scores, dtype=float)
    test = np.asarray(test) != 0
    train = np.zeros_like(test) if train is None or not exclude_train else np.asarray(train) != 0
    n_users, n_items = test.shape
    out = {name: [] for name in NAMES}
    for u in range(n_users):
        candidates = [i for i in range(n_items) if not train[u, i]]
        positives = [i for i in candidates if test[u, i]]
        negatives = [i for i in candidates if not test[u, i]]
        if not positives:
            for name in NAMES:
                out[name].append(math.nan)
            continue
        ranking = sorted(candidates, key=lambda i: (-scores[u, i], i))
        top = ranking[:k]
        hits = sum(1 for i in top if i in positives)
        out["precision"].append(hits / k)
        out["recall"].append(hits / len(positives))
        out["hit_rate"].append(1.0 if hits else 0.0)
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if i in positives)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(positives))))
        out["ndcg"].append(dcg / ideal)
        if not negatives:
            out["auc"].append(math.nan)
            continue
        pairs = 0.0
        for p in positives:
            for n in negatives:
                if scores[u, p] > scores[u, n]:
                    pairs += 1
                elif scores[u, p] == scores[u, n]:
                    pairs += 0.5
        out["auc"].append(pairs / (len(positives) * len(negatives)))
    return {name: np.array(values) for name, values in out.items()}


def nanmean(values):
    kept = values[~np.isnan(values)]
    return kept.mean() if kept.size else math.nan


@st.composite
def problems(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 10))
    shape = (n_users, n_items)
    # Few distinct values, so ties (also at the top-k boundary and at +-inf) are common.
    scores = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from(
        [-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0, np.inf])))
    test = draw(hnp.arrays(np.bool_, shape))
    train = draw(st.none() | hnp.arrays(np.bool_, shape))
    k = draw(st.integers(1, 12))
    exclude_train = draw(st.booleans())
    batch_size = draw(st.integers(1, 4))
    as_callable = draw(st.booleans())
    return scores, test, train, k, exclude_train, batch_size, as_callable


def check_against_reference(scores, test, train, k, exclude_train, batch_size, as_callable):
    expected = reference(scores, test, train, k, exclude_train)
    test_csr = sp.csr_matrix(test.astype(np.float32))
    train_csr = None if train is None else sp.csr_matrix(train.astype(np.float32))
    given_scores = (lambda users: scores[users]) if as_callable else scores
    kw = dict(train=train_csr, exclude_train=exclude_train, batch_size=batch_size)
    found = evaluate(given_scores, test_csr, k=k, per_user=True, **kw)
    means = evaluate(given_scores, test_csr, k=k, **kw)
    for name in NAMES:
        key = name if name == "auc" else f"{name}@{k}"
        np.testing.assert_allclose(found[key], expected[name], equal_nan=True, err_msg=key)
        np.testing.assert_allclose(means[key], nanmean(expected[name]), equal_nan=True)
        if name == "auc":
            alone = auc(given_scores, test_csr, per_user=True, **kw)
        else:
            alone = FUNCTIONS[name](given_scores, test_csr, k, per_user=True, **kw)
        np.testing.assert_allclose(alone, expected[name], equal_nan=True, err_msg=name)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_every_metric_matches_brute_force(problem):
    check_against_reference(*problem)


@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_on_larger_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 80
    scores = np.round(rng.normal(size=(n_users, n_items)), 1)  # many ties
    test = rng.random((n_users, n_items)) < 0.05
    train = (rng.random((n_users, n_items)) < 0.2) & ~test
    check_against_reference(scores, test, train, 10, True, 16, True)
    check_against_reference(scores.astype(np.float32), test, train, 100, False, 7, False)


def test_perfect_scorer_has_known_answers():
    rng = np.random.default_rng(0)
    test = rng.random((40, 30)) < 0.15
    test[:, 0] = False
    test[0] = False                     # a user with no test items is skipped
    test[1, :25] = True                 # more positives than k
    test_csr = sp.csr_matrix(test.astype(np.float32))
    k = 10
    found = evaluate(test.astype(float), test_csr, k=k, per_user=True)
    n_test = test.sum(axis=1)
    has = n_test > 0
    np.testing.assert_allclose(found["precision@10"][has], np.minimum(k, n_test[has]) / k)
    np.testing.assert_allclose(found["recall@10"][has], np.minimum(k, n_test[has]) / n_test[has])
    np.testing.assert_allclose(found["ndcg@10"][has], 1.0)
    np.testing.assert_allclose(found["auc"][has], 1.0)
    assert np.isnan(found["precision@10"][~has]).all()
    assert auc(-test.astype(float), test_csr) == 0.0
    assert precision_at_k(test.astype(float), test_csr, k) == pytest.approx(
        np.mean(np.minimum(k, n_test[has]) / k))


def test_constant_scores_give_half_auc_and_index_order_top_k():
    test = sp.csr_matrix(np.array([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0]], dtype=np.float32))
    scores = np.zeros((2, 5))
    assert auc(scores, test) == 0.5
    # All tied: the top 2 are items 0 and 1, so user 0 has one hit, user 1 one hit.
    np.testing.assert_allclose(precision_at_k(scores, test, 2, per_user=True), [0.5, 0.5])
    np.testing.assert_allclose(ndcg_at_k(scores, test, 2, per_user=True),
                               [(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 1.0])


def test_train_items_are_neither_hits_nor_negatives():
    test = sp.csr_matrix(np.array([[0, 0, 1, 0, 1, 0]], dtype=np.float32))
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 1, 0]], dtype=np.float32))
    scores = np.array([[9.0, 8.0, 7.0, 1.0, 6.0, 0.0]])
    # Candidates are items 2, 3, 5 (item 4 is in train, so not a positive either).
    assert precision_at_k(scores, test, 1, train=train) == 1.0
    assert recall_at_k(scores, test, 1, train=train) == 1.0
    assert auc(scores, test, train=train) == 1.0
    # Without exclusion the train items outrank the test item, and item 4 counts.
    assert precision_at_k(scores, test, 1, train=train, exclude_train=False) == 0.0
    assert recall_at_k(scores, test, 3, train=train, exclude_train=False) == 0.5
    assert auc(scores, test, train=train, exclude_train=False) == 4 / 8


def test_k_beyond_the_candidates_divides_precision_by_k():
    test = sp.csr_matrix(np.array([[1, 0, 1, 0, 0]], dtype=np.float32))
    train = sp.csr_matrix(np.array([[0, 1, 0, 1, 1]], dtype=np.float32))
    scores = np.array([[0.0, 5.0, 1.0, 5.0, 5.0]])
    found = evaluate(scores, test, train=train, k=20)
    assert found == {"precision@20": 0.1, "recall@20": 1.0, "hit_rate@20": 1.0,
                     "ndcg@20": pytest.approx(1.0), "auc": pytest.approx(math.nan, nan_ok=True)}


def test_users_without_test_items_are_skipped_and_never_scored():
    test = sp.csr_matrix(np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]],
                                  dtype=np.float32))
    asked = []

    def score(users):
        asked.append(users.copy())
        return np.tile([3.0, 2.0, 1.0], (len(users), 1))
    per_user = recall_at_k(score, test, 1, per_user=True, batch_size=1)
    np.testing.assert_array_equal(per_user, [np.nan, 0.0, np.nan, 1.0])
    assert [a.tolist() for a in asked] == [[1], [3]]
    assert recall_at_k(score, test, 1) == 0.5
    assert math.isnan(precision_at_k(np.zeros((4, 3)), sp.csr_matrix((4, 3)), 1))


def test_callable_is_called_in_batches_of_users():
    rng = np.random.default_rng(1)
    test = sp.csr_matrix((rng.random((50, 20)) < 0.3).astype(np.float32))
    scores = rng.normal(size=(50, 20))
    sizes = []

    def score(users):
        sizes.append(len(users))
        return scores[users]
    assert evaluate(score, test, batch_size=16) == evaluate(scores, test, batch_size=1000)
    assert max(sizes) == 16 and sum(sizes) == np.count_nonzero(np.diff(test.indptr))


def test_explicit_zeros_are_not_positives():
    test = sp.csr_matrix((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2])),
                         shape=(1, 3))
    assert recall_at_k(np.array([[3.0, 2.0, 1.0]]), test, 1) == 0.0


def test_invalid_input_is_rejected_with_advice():
    test = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.full((3, 3), np.nan), test)
    with pytest.raises(ValueError, match="shape"):
        auc(np.zeros((2, 3)), test)
    with pytest.raises(ValueError, match="expected"):
        auc(lambda users: np.zeros((len(users), 2)), test)
    with pytest.raises(ValueError, match="train"):
        auc(np.zeros((3, 3)), test, train=sp.csr_matrix((3, 4)))
    with pytest.raises(TypeError, match="scipy.sparse"):
        auc(np.zeros((3, 3)), np.eye(3))
    with pytest.raises(ValueError, match="k must"):
        precision_at_k(np.zeros((3, 3)), test, 0)
