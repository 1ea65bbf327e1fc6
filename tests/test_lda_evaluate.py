"""models.lda.evaluate: fold-in against a plain-numpy fixed point and known answers, the
same θ for a document in any batch, log-likelihood against numpy, sound and seeded
document-completion splits, perplexities that rank topics as they should, and checks
that name the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from psframework import ConfigError, ShapeError
from models.lda import evaluate
from models.lda.evaluate import completion_perplexity, fold_in, log_likelihood, split_halves
from models.synthetic_topics import Corpus, make_corpus


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus(300, vocabulary=400, topics=8, doc_length=60, seed=4)


def reference_fold_in(X: sp.csr_matrix, phi: np.ndarray, alpha: float, iterations: int,
                      tol: float) -> np.ndarray:
    """The fixed point as the docs write it, one dense document at a time."""
    dense = X.toarray().astype(np.float64)
    K = phi.shape[0]
    theta = np.empty((dense.shape[0], K))
    for d, x in enumerate(dense):
        t = np.full(K, 1.0 / K)
        if x.sum() > 0:
            for _ in range(iterations):
                p = t @ phi
                new = (alpha + t * (phi @ np.divide(x, p, out=np.zeros_like(x), where=x > 0))
                       ) / (x.sum() + K * alpha)
                change = np.abs(new - t).max()
                t = new
                if change < tol:
                    break
        theta[d] = t
    return theta


def test_fold_in_matches_a_numpy_reference(corpus):
    X, phi = corpus.docs, corpus.topic_word
    exact = fold_in(X, phi, 0.1, iterations=30, tol=0.0)  # every document 30 rounds
    np.testing.assert_allclose(exact, reference_fold_in(X, phi, 0.1, 30, 0.0),
                               rtol=1e-9, atol=1e-12)
    stopped = fold_in(X, phi, 0.1)
    np.testing.assert_allclose(stopped, reference_fold_in(X, phi, 0.1, 100, 1e-6), atol=1e-5)
    assert stopped.shape == (300, 8) and stopped.dtype == np.float64
    np.testing.assert_allclose(stopped.sum(axis=1), 1.0, atol=1e-12)
    # with the true topics, θ lands near each document's true mixture
    assert np.abs(stopped - corpus.doc_topic).sum(axis=1).mean() < 0.25


def test_fold_in_known_answers():
    X = sp.csr_matrix(np.array([[3, 0, 1, 0], [0, 0, 0, 0], [0, 5, 2, 1]]))
    np.testing.assert_array_equal(fold_in(X, np.full((1, 4), 0.25), 0.1), 1.0)  # one topic
    # two topics on disjoint words: θ_k ∝ α + (the document's counts on topic k's words)
    phi = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.25, 0.75]])
    alpha = 0.3
    on = np.array([[3, 1], [0, 0], [5, 3]], float)
    np.testing.assert_allclose(fold_in(X, phi, alpha), (on + alpha) / (on + alpha).sum(
        axis=1, keepdims=True), rtol=1e-12)
    # an empty document gets the prior mean: uniform, or α / Σα for one α per topic
    np.testing.assert_allclose(fold_in(X, phi, [1.0, 3.0])[1], [0.25, 0.75], rtol=1e-15)


def test_a_document_gets_the_same_theta_in_any_batch_or_order(corpus, monkeypatch):
    X, phi = corpus.docs, corpus.topic_word
    whole = fold_in(X, phi, 0.1)
    order = np.random.default_rng(0).permutation(300)
    assert np.array_equal(fold_in(X[order], phi, 0.1), whole[order])
    assert np.array_equal(fold_in(X[[17]], phi, 0.1)[0], whole[17])
    assert np.array_equal(fold_in(sp.vstack([X[:5], X[:5]]).tocsr(), phi, 0.1),
                          np.vstack([whole[:5], whole[:5]]))
    monkeypatch.setattr(evaluate, "BLOCK_FLOATS", 64)  # many small blocks of gathered φ
    assert np.array_equal(fold_in(X, phi, 0.1), whole)
    # unsorted indices, duplicate entries, a float or int32 dtype: the same counts
    coo = X[:40].tocoo()
    halves = np.concatenate([coo.data // 2, coo.data - coo.data // 2])
    messy = sp.csr_matrix((halves.astype(np.float32), (np.tile(coo.row, 2),
                                                        np.tile(coo.col, 2))), shape=(40, 400))
    messy.has_sorted_indices = False
    assert np.array_equal(fold_in(messy, phi, 0.1), whole[:40])
    assert np.array_equal(fold_in(X[:40].astype(np.int32).tocsc(), phi, 0.1), whole[:40])


def test_log_likelihood_matches_numpy(corpus):
    X, phi = corpus.docs, corpus.topic_word
    theta = fold_in(X, phi, 0.1)
    expected = (X.toarray() * np.log(theta @ phi)).sum()
    assert math.isclose(log_likelihood(X, phi, theta), expected, rel_tol=1e-12)
    assert log_likelihood(X[[3, 1, 2]], phi, theta[[3, 1, 2]]) == pytest.approx(
        (X[[3, 1, 2]].toarray() * np.log(theta[[3, 1, 2]] @ phi)).sum(), rel=1e-12)
    zero = phi.copy()
    word = X[0].indices[0]
    zero[:, word] = 0
    zero[:, (word + 1) % 400] += phi[:, word]  # rows still sum to 1
    assert log_likelihood(X[:1], zero, theta[:1]) == -math.inf


def test_split_halves_keeps_every_count_and_is_seeded(corpus):
    X = corpus.docs
    observed, held = split_halves(X, seed=3)
    for part in (observed, held):
        assert isinstance(part, sp.csr_matrix) and part.shape == X.shape
        assert part.dtype == np.int64 and (part.data > 0).all()
    assert ((observed + held) != X).nnz == 0
    lengths = np.asarray(X.sum(axis=1)).ravel()
    np.testing.assert_array_equal(np.asarray(observed.sum(axis=1)).ravel(), lengths // 2)
    again = split_halves(X, seed=3)
    assert (again[0] != observed).nnz == 0 and (again[1] != held).nnz == 0
    assert (split_halves(X, seed=4)[0] != observed).nnz > 0
    # a row's split depends on its row number, counts and the seed only
    assert (split_halves(X[:50], seed=3)[0] != observed[:50]).nnz == 0
    # every token is as likely to be observed: over seeds, each word's observed share ≈ 1/2
    word_row = sp.csr_matrix(np.array([[40, 30, 20, 10]]))
    shares = np.mean([split_halves(word_row, seed=s)[0].toarray()[0] for s in range(400)],
                     axis=0) / [40, 30, 20, 10]
    np.testing.assert_allclose(shares, 0.5, atol=0.03)


def test_completion_perplexity_ranks_topics(corpus):
    X, V = corpus.docs, 400
    true = completion_perplexity(X, corpus.topic_word, 0.1)
    assert set(true) == {"perplexity", "log_likelihood", "tokens", "documents"}
    lengths = np.asarray(X.sum(axis=1)).ravel()
    assert true["tokens"] == int((lengths - lengths // 2)[lengths >= 2].sum())
    assert true["documents"] == int((lengths >= 2).sum())
    assert math.isclose(true["perplexity"], math.exp(-true["log_likelihood"] / true["tokens"]))
    rng = np.random.default_rng(1)
    random = rng.dirichlet(np.full(V, 0.1), 8)
    uniform = np.full((8, V), 1.0 / V)
    assert true["perplexity"] < 0.5 * completion_perplexity(X, random, 0.1)["perplexity"]
    assert completion_perplexity(X, uniform, 0.1)["perplexity"] == pytest.approx(V, rel=1e-9)
    assert completion_perplexity(X, corpus.topic_word, 0.1) == true  # deterministic
    assert completion_perplexity(X, corpus.topic_word, 0.1, seed=1) != true


def test_completion_perplexity_skips_documents_under_two_tokens():
    X = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [2, 1, 1], [0, 1, 1]]))
    got = completion_perplexity(X, np.full((2, 3), 1 / 3), 0.5)
    assert got["documents"] == 2 and got["tokens"] == 2 + 1
    assert got["perplexity"] == pytest.approx(3)
    nothing = completion_perplexity(X[:2], np.full((2, 3), 1 / 3), 0.5)
    assert nothing["tokens"] == 0 and math.isnan(nothing["perplexity"])


def test_bad_inputs_name_the_fix(corpus):
    X, phi = corpus.docs, corpus.topic_word
    with pytest.raises(ConfigError, match="scipy.sparse"):
        fold_in(X.toarray(), phi, 0.1)
    with pytest.raises(ShapeError, match="same vocabulary"):
        fold_in(X[:, :399], phi, 0.1)
    with pytest.raises(ShapeError, match="K × V"):
        fold_in(X, phi[0], 0.1)
    with pytest.raises(ConfigError, match="normalize"):
        fold_in(X, phi * 2, 0.1)
    with pytest.raises(ConfigError, match="non-negative"):
        fold_in(X, -phi, 0.1)
    with pytest.raises(ConfigError, match="integer word counts"):
        fold_in(X * 0.5, phi, 0.1)
    with pytest.raises(ConfigError, match="integer word counts"):
        split_halves(-X)
    with pytest.raises(ConfigError, match="alpha"):
        fold_in(X, phi, 0.0)
    with pytest.raises(ShapeError, match="one value per topic"):
        fold_in(X, phi, [0.1, 0.2])
    with pytest.raises(ShapeError, match="theta must be"):
        log_likelihood(X, phi, np.full((300, 7), 1 / 7))
    with pytest.raises(ConfigError, match="distribution over topics"):
        log_likelihood(X, phi, np.full((300, 8), 0.5))
    with pytest.raises(ConfigError, match="normalize"):
        completion_perplexity(X, phi + 1, 0.1)
