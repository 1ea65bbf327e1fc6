"""The one evaluator of topic models given their topics: every system in
benchmarks/lda.py, and the LDA APIs, score documents with these functions.

- `fold_in(docs, topic_word, alpha)`: each document's topic distribution θ_d with the
  topics φ fixed, by the EM fixed point of the posterior mean

      θ_dk ← (α_k + Σ_w n_dw · θ_dk φ_kw / Σ_j θ_dj φ_jw) / (L_d + Σ_j α_j)

  from uniform, until max_k |Δθ_dk| < tol or `iterations` rounds (L_d: the document's
  tokens). It is deterministic and each document's θ depends only on its own counts
  (no random numbers, nothing shared between documents, a fixed order of arithmetic), so
  a document gets the same θ, bit for bit, in any batch and any order: Spark partitions
  folding in their rows agree exactly with a local call.
- `log_likelihood(docs, topic_word, theta)`: Σ_d Σ_w n_dw log Σ_k θ_dk φ_kw.
- `split_halves(docs, seed)` and `completion_perplexity(...)`: document completion
  (Wallach et al. 2009), the held-out perplexity every system is compared by: each
  document's tokens in a seeded random order, the first ⌊L/2⌋ observed (θ folded in on
  them), the other ⌈L/2⌉ held (and scored).

Documents are scipy sparse count matrices: rows documents, columns word ids, values
non-negative integer counts (any integer or float dtype holding integers). topic_word
is K × V, rows summing to 1. The kernels read φ column by column, so each call gathers
the columns of the words a block of documents uses into a words × K array (a bounded
amount at a time) and works on that.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import scipy.sparse as sp

from psframework import ConfigError, ShapeError
from models.lda import corpus

__all__ = ["completion_perplexity", "fold_in", "log_likelihood", "split_halves"]

BLOCK_FLOATS = 1 << 22  # gathered φ columns per block: 32 MB of float64
ROW_SUM_TOLERANCE = 1e-6


# -- kernels ------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _dot(theta, phi_w):
    """Σ_k θ_k φ_kw in a fixed order (four interleaved partial sums, then added in
    order): the same bits for the same inputs, wherever the arrays sit in memory."""
    K = theta.size
    s0 = s1 = s2 = s3 = 0.0
    k = 0
    while k + 4 <= K:
        s0 += theta[k] * phi_w[k]
        s1 += theta[k + 1] * phi_w[k + 1]
        s2 += theta[k + 2] * phi_w[k + 2]
        s3 += theta[k + 3] * phi_w[k + 3]
        k += 4
    while k < K:
        s0 += theta[k] * phi_w[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True)
def fold_in_kernel(indptr, cols, counts, phi_t, alpha, iterations, tol, theta):
    """θ of each row of the CSR (indptr, cols, counts) into theta (n × K), cols indexing
    the rows of phi_t (words × K: φ's columns). A word whose φ column is all zero has
    no probability under any θ and is left out of its document."""
    n, K = theta.shape
    alpha_sum = 0.0
    for k in range(K):
        alpha_sum += alpha[k]
    acc = np.empty(K)
    for d in range(n):
        t = theta[d]
        start, end = indptr[d], indptr[d + 1]
        if start == end:  # no tokens: the prior mean
            for k in range(K):
                t[k] = alpha[k] / alpha_sum
            continue
        for k in range(K):
            t[k] = 1.0 / K
        for _ in range(iterations):
            acc[:] = 0.0
            length = 0.0
            for j in range(start, end):
                phi_w = phi_t[cols[j]]
                p = _dot(t, phi_w)
                if p > 0.0:
                    length += counts[j]
                    scale = counts[j] / p
                    for k in range(K):
                        acc[k] += scale * phi_w[k]
            denominator = length + alpha_sum
            change = 0.0
            for k in range(K):
                new = (alpha[k] + t[k] * acc[k]) / denominator
                change = max(change, abs(new - t[k]))
                t[k] = new
            if change < tol:
                break


@numba.njit(nogil=True, cache=True)
def log_likelihood_kernel(indptr, cols, counts, phi_t, theta, out):
    """out[d] = Σ_w n_dw log Σ_k θ_dk φ_kw for each row d (-inf if a word has no
    probability)."""
    for d in range(theta.shape[0]):
        total = 0.0
        for j in range(indptr[d], indptr[d + 1]):
            total += counts[j] * np.log(_dot(theta[d], phi_t[cols[j]]))
        out[d] = total


# -- checks -------------------------------------------------------------------------------
def _docs(docs, who: str) -> sp.csr_matrix:
    """A canonical float64 CSR copy of `docs` (`corpus.counts`: sorted, summed duplicates,
    counts checked): a document's arithmetic then depends only on its words and counts."""
    if not sp.issparse(docs):
        raise ConfigError(f"{who}: docs must be a scipy.sparse matrix of word counts (rows "
                          f"documents, columns word ids), got {type(docs).__name__}; build "
                          "one with scipy.sparse.csr_matrix((counts, (doc, word)), shape=...)")
    if docs.ndim != 2:
        raise ShapeError(f"{who}: docs must be 2-D (documents × vocabulary), got shape "
                         f"{docs.shape}")
    return corpus.counts(docs).astype(np.float64)


def _topics(topic_word, n_words: int, who: str) -> np.ndarray:
    phi = np.asarray(topic_word, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] < 1:
        raise ShapeError(f"{who}: topic_word must be a K × V array (topics × vocabulary), "
                         f"got shape {phi.shape}")
    if phi.shape[1] != n_words:
        raise ShapeError(f"{who}: topic_word has {phi.shape[1]} columns (words) but docs "
                         f"have {n_words}: both must use the same vocabulary (pass "
                         f"docs with shape (n_docs, {phi.shape[1]}))")
    if not np.isfinite(phi).all() or (phi < 0).any():
        raise ConfigError(f"{who}: topic_word must hold finite non-negative probabilities")
    sums = phi.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
        raise ConfigError(f"{who}: each row of topic_word is a topic's distribution over "
                          f"words and must sum to 1; row {worst} sums to {sums[worst]:.6g}: "
                          "normalize with topic_word / topic_word.sum(axis=1, keepdims=True)")
    return phi


def _alpha(alpha, K: int, who: str) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(K, float(a))
    if a.shape != (K,):
        raise ShapeError(f"{who}: alpha must be a number or one value per topic ({K}), got "
                         f"shape {a.shape}")
    if not np.isfinite(a).all() or (a <= 0).any():
        raise ConfigError(f"{who}: alpha (the documents' Dirichlet prior) must be > 0, got "
                          f"{alpha!r}")
    return a


def _blocks(X: sp.csr_matrix, K: int):
    """(start, stop, indptr, local cols, phi rows) per block of rows whose words' φ
    columns, gathered, stay within BLOCK_FLOATS floats (at least one row a block)."""
    per_block = max(1, BLOCK_FLOATS // K)
    start = 0
    while start < X.shape[0]:
        stop = int(np.searchsorted(X.indptr, X.indptr[start] + per_block, side="right")) - 1
        stop = min(max(stop, start + 1), X.shape[0])
        lo, hi = X.indptr[start], X.indptr[stop]
        words, local = np.unique(X.indices[lo:hi], return_inverse=True)
        yield (start, stop, X.indptr[start:stop + 1] - lo, local.astype(np.int64),
               X.data[lo:hi], words)
        start = stop


# -- the evaluator ------------------------------------------------------------------------
def fold_in(docs, topic_word, alpha, *, iterations: int = 100, tol: float = 1e-6) -> np.ndarray:
    """n_docs × K float64 rows summing to 1: each document's θ with the topics fixed (the
    module's fixed point; at most `iterations` rounds, fewer once max |Δθ| < tol). alpha:
    one number, or one per topic. An empty document gets the prior mean α / Σα (uniform
    for one number)."""
    who = "fold_in"
    X = _docs(docs, who)
    phi = _topics(topic_word, X.shape[1], who)
    K = phi.shape[0]
    a = _alpha(alpha, K, who)
    if int(iterations) < 1 or not tol >= 0:
        raise ConfigError(f"{who}: need iterations >= 1 and tol >= 0, got iterations="
                          f"{iterations!r}, tol={tol!r}")
    theta = np.empty((X.shape[0], K))
    for start, stop, indptr, cols, counts, words in _blocks(X, K):
        phi_t = np.ascontiguousarray(phi[:, words].T)
        fold_in_kernel(indptr, cols, counts, phi_t, a, int(iterations), float(tol),
                       theta[start:stop])
    return theta


def log_likelihood(docs, topic_word, theta) -> float:
    """Σ_d Σ_w n_dw log Σ_k θ_dk φ_kw (natural log; -inf if some word of docs has
    probability 0 under its document's mixture). The documents' terms are added exactly
    rounded (math.fsum), so the total does not depend on their order."""
    who = "log_likelihood"
    X = _docs(docs, who)
    phi = _topics(topic_word, X.shape[1], who)
    th = np.asarray(theta, dtype=np.float64)
    if th.shape != (X.shape[0], phi.shape[0]):
        raise ShapeError(f"{who}: theta must be n_docs × K = {(X.shape[0], phi.shape[0])} "
                         f"(one topic distribution per document, e.g. from fold_in), got "
                         f"{th.shape}")
    if not np.isfinite(th).all() or (th < 0).any() or (
            th.size and np.abs(th.sum(axis=1) - 1).max() > ROW_SUM_TOLERANCE):
        raise ConfigError(f"{who}: each row of theta must be a distribution over topics "
                          "(non-negative, summing to 1)")
    th = np.ascontiguousarray(th)
    per_doc = np.empty(X.shape[0])
    for start, stop, indptr, cols, counts, words in _blocks(X, phi.shape[0]):
        phi_t = np.ascontiguousarray(phi[:, words].T)
        log_likelihood_kernel(indptr, cols, counts, phi_t, th[start:stop], per_doc[start:stop])
    if np.isneginf(per_doc).any():
        return -math.inf
    return math.fsum(per_doc.tolist())


def _mix(*values: np.ndarray) -> np.ndarray:
    """splitmix64 of the values combined (uint64 arithmetic wraps, as intended)."""
    x = np.zeros(values[0].shape, np.uint64)
    for v in values:
        x = (x ^ v.astype(np.uint64)) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def split_halves(docs, seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(observed, held), CSR count matrices of docs' shape with observed + held == docs:
    each document's tokens (its counts expanded, in word-id order) are put in a random
    order, seeded by (seed, row number, token position) through a hash, so a document's
    split depends on nothing but those and its counts; the first ⌊L/2⌋ are observed,
    the other ⌈L/2⌉ held. Counts come back as int64."""
    X = _docs(docs, "split_halves")
    counts = X.data.astype(np.int64)
    lengths = np.diff(np.concatenate([[0], np.cumsum(counts)])[X.indptr])
    entry = np.repeat(np.arange(counts.size), counts)  # each token's stored entry
    row = np.repeat(np.arange(X.shape[0]), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(entry.size) - starts          # the token's place in its row
    key = _mix(np.full(entry.size, seed, np.int64), row, position)
    order = np.lexsort((key, row))                      # rows kept, shuffled within
    rank = np.empty(entry.size, np.int64)
    rank[order] = np.arange(entry.size)
    observed_tokens = (rank - starts) < np.repeat(lengths // 2, lengths)
    seen = np.bincount(entry[observed_tokens], minlength=counts.size)

    def matrix(values: np.ndarray) -> sp.csr_matrix:  # eliminate_zeros compacts values
        out = sp.csr_matrix((values, X.indices.copy(), X.indptr.copy()), shape=X.shape)
        out.eliminate_zeros()
        return out
    held = counts - seen
    return matrix(seen), matrix(held)


def completion_perplexity(docs, topic_word, alpha, *, seed: int = 0,
                          iterations: int = 100) -> dict:
    """Document-completion perplexity of `docs` under the topics: `split_halves(docs,
    seed)`, θ folded in on each observed half (`fold_in(..., iterations)`), the held
    halves scored (`log_likelihood`). Documents of fewer than 2 tokens are skipped (one
    half would be empty). Returns {"perplexity": exp(-log_likelihood / tokens),
    "log_likelihood": of the held tokens, "tokens": held tokens scored, "documents":
    documents scored}; with nothing to score, perplexity and log_likelihood are NaN."""
    observed, held = split_halves(docs, seed)
    phi = _topics(topic_word, held.shape[1], "completion_perplexity")
    keep = np.flatnonzero(np.asarray(observed.sum(axis=1)).ravel() >= 1)
    observed, held = observed[keep], held[keep]
    tokens = int(held.sum())
    if tokens == 0:
        return {"perplexity": math.nan, "log_likelihood": math.nan, "tokens": 0,
                "documents": 0}
    theta = fold_in(observed, phi, alpha, iterations=iterations)
    ll = log_likelihood(held, phi, theta)
    return {"perplexity": math.exp(-ll / tokens), "log_likelihood": ll, "tokens": tokens,
            "documents": int(keep.size)}
