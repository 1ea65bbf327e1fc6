"""Synthetic corpora drawn from known topics (LDA's own generative model), for tests and
benchmarks of the topic models.

The generative story (all draws from one seed, so the same arguments give the same data):

1. Topics (`make_topics`): a base distribution over the `vocabulary` words with
   Zipf(`zipf`) frequencies in a random order of the word ids (the words every topic
   uses, like stop words), and a random partition of the words into `topics` groups of
   equal size (±1): group k is topic k's own words. Topic k puts `separation` of its
   mass on its own words, with weights ~ Dirichlet(`beta`) over them, and the rest on
   the base:

       φ_k(w) = (1 - separation) · base(w) + separation · own_k(w)

   The own groups are disjoint, so any two topics are exactly `separation` apart in
   total variation: the knob for how well a correct LDA can tell them apart (at 0.8, the
   default, a standard LDA finds all 5 topics of 400 documents, best of 3 restarts, each
   within Hellinger 0.2 of the truth while true topics are 0.85 apart; 0 makes every
   topic the base).
   `beta` is the topic's sparsity: the smaller, the fewer of its own words carry it
   (0.1 over 100 own words puts ~90% of the own mass on ~20 of them).
2. Each document d draws its topic mixture θ_d ~ Dirichlet(`alpha`) over the topics and
   its length L_d = 1 + Poisson(`doc_length` - 1) (so no document is empty).
3. Each of its L_d tokens draws a topic z ~ θ_d, then a word w ~ φ_z.

`docs` counts the words of each document (the bag of words LDA sees); `topic_word` and
`doc_topic` are the truth it was drawn from, dense float64 (topics × vocabulary and
n_docs × topics: at 100k documents, 1,000 topics and a 100k vocabulary, 800 MB each). `match_topics` pairs learned topics with the true ones to say how well they were
recovered.

Everything is vectorised: 10M tokens over a 100k vocabulary and 1,000 topics take about
10 s on one core (token topics by one searchsorted per block of documents over their
offset topic CDFs, words by one searchsorted per topic over its tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from psframework import ConfigError

__all__ = ["Corpus", "lengths", "make_corpus", "make_topics", "match_topics", "tokens"]


@dataclass(frozen=True)
class Corpus:
    docs: sp.csr_matrix      # n_docs × vocabulary int64 word counts, canonical CSR
    topic_word: np.ndarray   # topics × vocabulary float64, rows sum to 1 (the true φ)
    doc_topic: np.ndarray    # n_docs × topics float64, rows sum to 1 (the true θ)
    owner: np.ndarray        # int64 per word: the topic it is an own word of

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document (int64)."""
        return lengths(self.docs)

    def tokens(self) -> list[np.ndarray]:
        """Each document as an int64 array of word ids, one per token, in word-id order
        (LDA sees a bag of words: the order carries nothing)."""
        return tokens(self.docs)


def lengths(docs: sp.csr_matrix) -> np.ndarray:
    """Tokens per row of a CSR count matrix (int64)."""
    return np.asarray(docs.sum(axis=1, dtype=np.int64)).ravel()


def tokens(docs: sp.csr_matrix) -> list[np.ndarray]:
    """The rows of a CSR count matrix as int64 arrays of word ids, one per token, each
    row's words in the order of its stored entries."""
    words = np.repeat(docs.indices.astype(np.int64), docs.data.astype(np.int64))
    return np.split(words, np.cumsum(lengths(docs))[:-1])


def _check(**values: float) -> None:
    for name, value in values.items():
        if not np.isfinite(value) or value <= 0:
            raise ConfigError(f"make_corpus: {name} must be a positive number, got {value!r}")


def make_topics(vocabulary: int = 1000, topics: int = 10, *, beta: float = 0.1,
                separation: float = 0.8, zipf: float = 1.1, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """(topic_word, owner): `topics` well separated topics over `vocabulary` words, step 1
    of the module's story; owner[w] is the topic word w is an own word of."""
    return _topics(np.random.default_rng(seed), vocabulary, topics, beta, separation, zipf)


def _topics(rng: np.random.Generator, V: int, K: int, beta: float, separation: float,
            zipf: float) -> tuple[np.ndarray, np.ndarray]:
    if K < 1 or V < K:
        raise ConfigError(f"make_topics: need 1 <= topics <= vocabulary (each topic owns at "
                          f"least one word), got topics={K}, vocabulary={V}")
    if not 0 <= separation <= 1:
        raise ConfigError(f"make_topics: separation is a share of each topic's mass, in "
                          f"[0, 1]; got {separation!r}")
    _check(beta=beta, zipf=zipf)
    base = np.empty(V)
    base[rng.permutation(V)] = 1.0 / np.arange(1, V + 1) ** zipf
    base /= base.sum()
    owner = np.empty(V, np.int64)
    owner[rng.permutation(V)] = np.arange(V) % K
    weight = rng.standard_gamma(beta, V)
    total = np.bincount(owner, weight, minlength=K)
    if (total == 0).any():  # every weight of a group underflowed (tiny beta): uniform
        weight[total[owner] == 0] = 1.0
        total = np.bincount(owner, weight, minlength=K)
    topic_word = np.empty((K, V))
    topic_word[:] = (1.0 - separation) * base
    topic_word[owner, np.arange(V)] += separation * weight / total[owner]
    topic_word /= topic_word.sum(axis=1, keepdims=True)
    return topic_word, owner


def make_corpus(n_docs: int, *, vocabulary: int = 1000, topics: int = 10,
                doc_length: float = 100, alpha: float = 0.1, beta: float = 0.1,
                separation: float = 0.8, zipf: float = 1.1, seed: int = 0) -> Corpus:
    """n_docs documents drawn from `topics` known topics (see the module's story)."""
    if n_docs < 1 or doc_length < 1:
        raise ConfigError(f"make_corpus: need n_docs >= 1 and doc_length >= 1, got "
                          f"n_docs={n_docs}, doc_length={doc_length}")
    _check(alpha=alpha)
    rng = np.random.default_rng(seed)
    V, K = vocabulary, topics
    topic_word, owner = _topics(rng, V, K, beta, separation, zipf)

    doc_topic = rng.standard_gamma(alpha, (n_docs, K))
    sums = doc_topic.sum(axis=1)
    if (sums == 0).any():  # every gamma draw of a document underflowed (tiny alpha)
        empty = np.flatnonzero(sums == 0)
        doc_topic[empty, rng.integers(0, K, empty.size)] = 1.0
        sums = doc_topic.sum(axis=1)
    doc_topic /= sums[:, None]
    lengths = 1 + rng.poisson(doc_length - 1, n_docs)
    doc = np.repeat(np.arange(n_docs), lengths)

    # each token's topic: in blocks of documents, every document's CDF offset by its
    # index in the block, searched at the token's uniform plus that index (one
    # searchsorted per block)
    u = rng.random(doc.size)
    z = np.empty(doc.size, np.int64)
    ends = np.concatenate([[0], np.cumsum(lengths)])
    block = max(1, (1 << 20) // K)
    for start in range(0, n_docs, block):
        stop = min(start + block, n_docs)
        cdf = np.cumsum(doc_topic[start:stop], axis=1)
        cdf /= cdf[:, -1:]
        cdf += np.arange(stop - start, dtype=np.float64)[:, None]
        local = doc[ends[start]:ends[stop]] - start
        z[ends[start]:ends[stop]] = np.searchsorted(
            cdf.ravel(), u[ends[start]:ends[stop]] + local, side="right") - local * K
    np.clip(z, 0, K - 1, out=z)

    # each token's word: tokens grouped by topic, one searchsorted per topic's CDF
    by_topic = np.argsort(z, kind="stable")
    edges = np.concatenate([[0], np.cumsum(np.bincount(z, minlength=K))])
    u = rng.random(doc.size)
    words = np.empty(doc.size, np.int64)
    for k in range(K):
        mine = by_topic[edges[k]:edges[k + 1]]
        if mine.size:
            cdf_k = np.cumsum(topic_word[k])
            cdf_k /= cdf_k[-1]
            words[mine] = np.searchsorted(cdf_k, u[edges[k]:edges[k + 1]], side="right")
    np.minimum(words, V - 1, out=words)

    key, counts = np.unique(doc * V + words, return_counts=True)
    indptr = np.searchsorted(key, np.arange(n_docs + 1, dtype=np.int64) * V)
    docs = sp.csr_matrix((counts.astype(np.int64), (key % V).astype(np.int32), indptr),
                         shape=(n_docs, V))
    return Corpus(docs, topic_word, doc_topic, owner)


def match_topics(learned: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, hellinger): the pairing of learned topics with true ones (rows of two
    row-stochastic K × V matrices, in any order) that minimises the summed Hellinger
    distance (the Hungarian algorithm), as order[i] = the learned topic paired with true
    topic i and hellinger[i] that pair's distance in [0, 1] (0: the same topic, 1:
    disjoint). A topic model recovered the truth when every distance is small beside the
    distance between two true topics (~0.85 for `make_topics`' defaults)."""
    learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
    if learned.ndim != 2 or learned.shape != true.shape:
        raise ConfigError(f"match_topics: learned and true must be K × V arrays of one shape, "
                          f"got {learned.shape} and {true.shape}")
    affinity = np.sqrt(np.clip(learned, 0, None)) @ np.sqrt(np.clip(true, 0, None)).T
    distance = np.sqrt(np.clip(1.0 - affinity, 0.0, 1.0))  # distance[j, i]: learned j, true i
    rows, cols = linear_sum_assignment(distance)
    order = np.empty(true.shape[0], np.int64)
    order[cols] = rows
    return order, distance[order, np.arange(true.shape[0])]
