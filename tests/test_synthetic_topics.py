"""models.synthetic_topics: determinism, shapes, counts that add up, the documented
topic structure, word frequencies as the generative story says, recoverable topics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from psframework import ConfigError
from models.synthetic_topics import Corpus, make_corpus, make_topics, match_topics, tokens

SMALL = dict(vocabulary=300, topics=6, doc_length=40)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus(200, **SMALL, seed=5)


def same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0


def test_same_seed_same_corpus_other_seed_other_corpus(corpus):
    again = make_corpus(200, **SMALL, seed=5)
    assert same(corpus.docs, again.docs)
    for name in ("topic_word", "doc_topic", "owner"):
        np.testing.assert_array_equal(getattr(corpus, name), getattr(again, name))
    other = make_corpus(200, **SMALL, seed=6)
    assert not same(corpus.docs, other.docs)
    assert not np.array_equal(corpus.topic_word, other.topic_word)


def test_shapes_dtypes_and_distributions(corpus):
    docs = corpus.docs
    assert isinstance(docs, sp.csr_matrix) and docs.shape == (200, 300)
    assert docs.dtype == np.int64 and docs.has_canonical_format and (docs.data > 0).all()
    assert corpus.topic_word.shape == (6, 300) and corpus.topic_word.dtype == np.float64
    assert corpus.doc_topic.shape == (200, 6) and corpus.doc_topic.dtype == np.float64
    np.testing.assert_allclose(corpus.topic_word.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(corpus.doc_topic.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (corpus.topic_word > 0).all() and (corpus.doc_topic >= 0).all()
    assert corpus.owner.shape == (300,) and set(corpus.owner.tolist()) == set(range(6))
    assert np.bincount(corpus.owner).tolist() == [50] * 6  # equal groups
    with pytest.raises(dataclasses.FrozenInstanceError):
        corpus.docs = None


def test_counts_sum_to_lengths_and_tokens_agree(corpus):
    lengths = corpus.lengths
    assert lengths.dtype == np.int64 and (lengths >= 1).all()
    np.testing.assert_array_equal(np.asarray(corpus.docs.sum(axis=1)).ravel(), lengths)
    assert abs(lengths.mean() - 40) < 3  # 1 + Poisson(39)
    docs = corpus.tokens()
    assert len(docs) == 200 and [d.size for d in docs] == lengths.tolist()
    for d, words in enumerate(docs[:20]):
        assert words.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(words, minlength=300),
                                      corpus.docs[d].toarray().ravel())
    assert tokens(sp.csr_matrix((3, 5), dtype=np.int64))[1].size == 0  # empty rows


def test_topics_are_base_plus_own_words_and_exactly_separation_apart():
    """φ_k = (1 - s) base + s own_k with disjoint own groups: off its own words every topic
    is the same base, its own words carry s more, and any two are s apart in total
    variation (the module's story)."""
    s = 0.7
    phi, owner = make_topics(400, 8, separation=s, seed=2)
    base = np.array([phi[(owner[w] + 1) % 8, w] for w in range(400)]) / (1 - s)
    np.testing.assert_allclose(base.sum(), 1.0, atol=1e-12)
    for k in range(8):
        theirs = owner != k
        np.testing.assert_allclose(phi[k, theirs], (1 - s) * base[theirs], rtol=1e-12)
        np.testing.assert_allclose(phi[k, ~theirs].sum() - (1 - s) * base[~theirs].sum(), s,
                                   atol=1e-12)
    tv = 0.5 * np.abs(phi[:, None, :] - phi[None, :, :]).sum(axis=2)
    np.testing.assert_allclose(tv[~np.eye(8, dtype=bool)], s, atol=1e-12)
    # Zipf base: the most frequent word is 2^1.1 times the second
    top = np.sort(base)[::-1]
    np.testing.assert_allclose(top[0] / top[1], 2 ** 1.1, rtol=1e-9)


def test_word_frequencies_follow_doc_topic_times_topic_word():
    """A big sample (800k tokens) against the numpy expectation L_d · θ_d φ: the words'
    totals, and per document the tokens on each topic's own words (the per-document
    mixture), by chi-square statistics against their degrees of freedom."""
    data = make_corpus(2000, vocabulary=200, topics=5, doc_length=400, alpha=0.5, seed=11)
    X = data.docs.toarray().astype(np.float64)
    expected = data.lengths[:, None] * (data.doc_topic @ data.topic_word)
    observed_words, expected_words = X.sum(axis=0), expected.sum(axis=0)
    chi2 = ((observed_words - expected_words) ** 2 / expected_words).sum()
    df = 200 - 1
    assert chi2 < df + 5 * np.sqrt(2 * df), chi2
    groups = np.zeros((200, 5))
    groups[np.arange(200), data.owner] = 1.0
    og, eg = X @ groups, expected @ groups  # n_docs × topics: tokens on each own group
    cells = eg > 5
    chi2 = ((og - eg)[cells] ** 2 / eg[cells]).sum()
    df = cells.sum() - 2000
    assert abs(chi2 / df - 1) < 0.1, chi2 / df
    # and a wrong θ (the documents' mixtures shuffled) is rejected by the same statistic
    eg_wrong = (data.lengths[:, None] * (data.doc_topic[::-1] @ data.topic_word)) @ groups
    assert ((og - eg_wrong)[cells] ** 2 / eg_wrong[cells]).sum() / df > 3


def test_match_topics_pairs_a_permutation_and_measures_distance():
    phi, _ = make_topics(300, 6, seed=1)
    perm = np.array([3, 0, 5, 1, 4, 2])
    order, hellinger = match_topics(phi[perm], phi)
    np.testing.assert_array_equal(perm[order], np.arange(6))
    np.testing.assert_allclose(hellinger, 0, atol=1e-7)
    uniform = np.full((6, 300), 1 / 300)
    _, far = match_topics(uniform, phi)
    assert (far > 0.3).all()
    with pytest.raises(ConfigError, match="one shape"):
        match_topics(phi[:5], phi)


def test_a_standard_lda_recovers_the_topics():
    """scikit-learn's LDA (batch variational Bayes), an implementation independent of ours,
    finds every true topic of a small corpus of the default shape: each learned topic is
    much closer to its true one than true topics are to each other. Like any LDA it can
    stop in a local optimum (two topics merged, one split), so the best of three restarts
    by its own bound is taken, as one would in practice."""
    from sklearn.decomposition import LatentDirichletAllocation
    data = make_corpus(400, vocabulary=500, topics=5, seed=3)
    fits = [LatentDirichletAllocation(5, doc_topic_prior=0.1, topic_word_prior=0.01,
                                      learning_method="batch", max_iter=20,
                                      random_state=r).fit(data.docs) for r in range(3)]
    best = max(fits, key=lambda lda: lda.score(data.docs))
    learned = best.components_ / best.components_.sum(axis=1, keepdims=True)
    _, hellinger = match_topics(learned, data.topic_word)
    root = np.sqrt(data.topic_word)
    apart = np.sqrt(1 - (root @ root.T)[~np.eye(5, dtype=bool)])
    assert hellinger.max() < 0.25 < 0.8 < apart.min(), (hellinger, apart)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="topics <= vocabulary"):
        make_corpus(10, vocabulary=5, topics=6)
    with pytest.raises(ConfigError, match="separation"):
        make_corpus(10, separation=1.5)
    with pytest.raises(ConfigError, match="alpha"):
        make_corpus(10, alpha=0)
    with pytest.raises(ConfigError, match="n_docs"):
        make_corpus(0)
