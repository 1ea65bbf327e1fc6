"""The LDA counts' numba kernels outside the sampler: aggregating a worker's (word, topic)
pairs, a shard's sparse rows and its part of the collapsed log-likelihood."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["count_pairs", "sparse_rows", "word_log_likelihood", "topic_log_likelihood"]


@numba.njit(nogil=True, cache=True)
def count_pairs(rows, cols, K):
    """Aggregate (row, col) pairs: the distinct keys row * K + col, sorted, and how often
    each occurs."""
    keys = rows * K + cols
    keys.sort()
    n = 0
    for i in range(keys.size):
        if i == 0 or keys[i] != keys[i - 1]:
            n += 1
    out = np.empty(n, np.int64)
    counts = np.zeros(n, np.int64)
    j = -1
    for i in range(keys.size):
        if i == 0 or keys[i] != keys[i - 1]:
            j += 1
            out[j] = keys[i]
        counts[j] += 1
    return out, counts


@numba.njit(nogil=True, cache=True)
def sparse_rows(data, rows):
    """The nonzero entries of data[rows] (a 2-d count array): (indptr, topics, counts)."""
    indptr = np.zeros(rows.size + 1, np.int64)
    for i in range(rows.size):
        n = 0
        for k in range(data.shape[1]):
            if data[rows[i], k] != 0:
                n += 1
        indptr[i + 1] = indptr[i] + n
    topics = np.empty(indptr[-1], np.int32)
    counts = np.empty(indptr[-1], np.int32)
    for i in range(rows.size):
        j = indptr[i]
        for k in range(data.shape[1]):
            c = data[rows[i], k]
            if c != 0:
                topics[j] = k
                counts[j] = c
                j += 1
    return indptr, topics, counts


@numba.njit(nogil=True, cache=True)
def word_log_likelihood(data, beta):
    """Σ over the entries of a word-topic count array of log Γ(n + β) - log Γ(β) (zero
    entries add nothing)."""
    lg = math.lgamma(beta)
    total = 0.0
    for i in range(data.shape[0]):
        for k in range(data.shape[1]):
            c = data[i, k]
            if c > 0:
                total += math.lgamma(c + beta) - lg
    return total


def topic_log_likelihood(nt: np.ndarray, V: int, beta: float) -> float:
    """The topics' normalisers in the collapsed log-likelihood: Σ_k log Γ(Vβ) -
    log Γ(n_k + Vβ)."""
    from scipy.special import gammaln
    return float(np.sum(gammaln(V * beta) - gammaln(nt + V * beta)))
