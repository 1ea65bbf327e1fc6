"""Numba kernels of the FMPair shard ops, on one shard's slice of the factor columns.

A *bag* is a sparse feature list (index, weight); a batch of bags is CSR-like:
`indptr` (n_bags + 1), `indices` and `weights`. All kernels release the GIL.

Update rule (`apply_update`), for each feature f in a bag that received a gradient, with
`grad` the summed ascent direction over its occurrences in such bags and `count` their
number:

    adagrad:   acc[f] += grad**2 ;  v[f] += lr * grad / sqrt(acc[f])   (per element)
    adabatch:  v[f] += lr * grad / count[f]                           (per feature)

where grad already includes the L2 term `- reg * count[f] * v[f]`.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def bag_sums(indptr, indices, weights, factors):
    """sums[b] = Σ_{f in bag b} x_f · factors[f]   (n_bags × k_local)."""
    n = indptr.shape[0] - 1
    out = np.zeros((n, factors.shape[1]), dtype=factors.dtype)
    for b in range(n):
        for t in range(indptr[b], indptr[b + 1]):
            f = indices[t]
            w = weights[t]
            for d in range(factors.shape[1]):
                out[b, d] += w * factors[f, d]
    return out


@numba.njit(nogil=True, cache=True)
def bag_linear(indptr, indices, weights, linear):
    """lin[b] = Σ_{f in bag b} x_f · linear[f]."""
    n = indptr.shape[0] - 1
    out = np.zeros(n, dtype=linear.dtype)
    for b in range(n):
        for t in range(indptr[b], indptr[b + 1]):
            out[b] += weights[t] * linear[indices[t]]
    return out


@numba.njit(nogil=True, cache=True)
def pair_scores(user_sums, item_sums, pairs):
    """scores[b, m] = user_sums[b] · item_sums[pairs[b, m]]   (partial over local dims)."""
    out = np.zeros(pairs.shape, dtype=user_sums.dtype)
    for b in range(pairs.shape[0]):
        for m in range(pairs.shape[1]):
            i = pairs[b, m]
            acc = 0.0
            for d in range(user_sums.shape[1]):
                acc += user_sums[b, d] * item_sums[i, d]
            out[b, m] = acc
    return out


@numba.njit(nogil=True, cache=True)
def sum_gradients(user_sums, item_sums, pairs, coef):
    """Ascent directions of the bag sums: d_user[b] = Σ_m coef[b,m] item_sums[pairs[b,m]],
    d_item[i] = Σ_{(b,m): pairs[b,m]=i} coef[b,m] user_sums[b]; d_lin[i] = Σ coef[b,m].
    A bag is *active* when some nonzero coefficient refers to it; only active bags'
    features take a step (and their regularization), the others are left alone."""
    d_user = np.zeros_like(user_sums)
    d_item = np.zeros_like(item_sums)
    d_lin = np.zeros(item_sums.shape[0], dtype=user_sums.dtype)
    user_active = np.zeros(user_sums.shape[0], dtype=np.bool_)
    item_active = np.zeros(item_sums.shape[0], dtype=np.bool_)
    for b in range(pairs.shape[0]):
        for m in range(pairs.shape[1]):
            c = coef[b, m]
            if c == 0.0:
                continue
            i = pairs[b, m]
            user_active[b] = True
            item_active[i] = True
            d_lin[i] += c
            for d in range(user_sums.shape[1]):
                d_user[b, d] += c * item_sums[i, d]
                d_item[i, d] += c * user_sums[b, d]
    return d_user, d_item, d_lin, user_active, item_active


@numba.njit(nogil=True, cache=True)
def feature_gradients(indptr, pos, weights, d_bags, active, grad, count):
    """For every occurrence t of a feature in an active bag b: grad[pos[t]] += x_t ·
    d_bags[b] and count[pos[t]] += 1, where pos maps occurrences to touched features."""
    for b in range(indptr.shape[0] - 1):
        if not active[b]:
            continue
        for t in range(indptr[b], indptr[b + 1]):
            p = pos[t]
            count[p] += 1
            for d in range(d_bags.shape[1]):
                grad[p, d] += weights[t] * d_bags[b, d]


@numba.njit(nogil=True, cache=True)
def apply_update(table, acc, touched, grad, count, lr, reg, adagrad):
    """Apply summed gradients of the touched rows to `table` (see the module docstring).
    `grad` and `count` are indexed by position in `touched`."""
    for t in range(touched.shape[0]):
        if count[t] == 0:  # only in bags that took no step
            continue
        f = touched[t]
        for d in range(table.shape[1]):
            g = grad[t, d] - reg * count[t] * table[f, d]
            if adagrad:
                acc[f, d] += g * g
                table[f, d] += lr * g / np.sqrt(acc[f, d])
            else:
                table[f, d] += lr * g / count[t]
