"""Passive-aggressive updates (Crammer et al. 2006) over a mini-batch, example by example.

A batch is CSR (indptr, cols, values) whose cols index the rows of W: the pulled weights
of the batch's active features, one column per weight vector (1 for binary labels, one
per class for one-vs-rest), the intercepts in W's last row. For each example, in order,
and each weight vector k with target y = ±1:

    loss  = max(0, 1 - y (w_k · x + b_k))
    tau   = loss / |x|²                 (PA)
          = min(C, loss / |x|²)         (PA-I)
          = loss / (|x|² + 1 / (2C))    (PA-II)
    w_k  += tau y x;   b_k += tau y     (with an intercept)

|x|² leaves the intercept out and PA and PA-I skip an example with |x|² = 0, as
scikit-learn's SGDClassifier(learning_rate="pa1"/"pa2") does."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["VARIANTS", "learn", "margins"]

VARIANTS = ("pa", "pa1", "pa2")


@numba.njit(nogil=True, cache=True)
def _margins(indptr, cols, values, W, fit_intercept, t, out):
    bias = W.shape[0] - 1
    for k in range(W.shape[1]):
        m = np.float64(W[bias, k]) if fit_intercept else 0.0
        for j in range(indptr[t], indptr[t + 1]):
            m += np.float64(values[j]) * W[cols[j], k]
        out[k] = m


@numba.njit(nogil=True, cache=True)
def _predicted(m):
    """The class a row of margins predicts: 1 if the one margin > 0 (binary), else the
    argmax (one-vs-rest)."""
    if m.size == 1:
        return 1 if m[0] > 0 else 0
    return np.argmax(m)


@numba.njit(nogil=True, cache=True)
def learn(indptr, cols, values, labels, W, variant, C, fit_intercept):
    """Update W in place over the batch's examples in order; labels[t] is the class
    index (binary: 0 or 1). Returns how many examples the weights misclassified just
    before learning from them (progressive validation)."""
    K = W.shape[1]
    bias = W.shape[0] - 1
    m = np.empty(K)
    mistakes = 0
    for t in range(indptr.size - 1):
        _margins(indptr, cols, values, W, fit_intercept, t, m)
        if _predicted(m) != labels[t]:
            mistakes += 1
        sq = 0.0
        for j in range(indptr[t], indptr[t + 1]):
            sq += np.float64(values[j]) * values[j]
        for k in range(K):
            y = 1.0 if (labels[t] == 1 if K == 1 else labels[t] == k) else -1.0
            loss = 1.0 - y * m[k]
            if loss <= 0.0:
                continue
            if variant == 2:
                tau = loss / (sq + 0.5 / C)
            elif sq == 0.0:
                continue
            elif variant == 1:
                tau = min(C, loss / sq)
            else:
                tau = loss / sq
            step = tau * y
            for j in range(indptr[t], indptr[t + 1]):
                W[cols[j], k] += step * values[j]
            if fit_intercept:
                W[bias, k] += step
    return mistakes


@numba.njit(nogil=True, cache=True)
def margins(indptr, cols, values, W, fit_intercept):
    """w_k · x + b_k for every example and weight vector: (examples, K) float64."""
    out = np.empty((indptr.size - 1, W.shape[1]))
    for t in range(indptr.size - 1):
        _margins(indptr, cols, values, W, fit_intercept, t, out[t])
    return out
