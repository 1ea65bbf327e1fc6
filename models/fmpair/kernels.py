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

# fastmath: float32 arithmetic that LLVM may reorder and vectorize; error_model numpy:
# no zero-division checks, which would otherwise keep every loop scalar (4x slower)
jit = numba.njit(nogil=True, cache=True, fastmath=True, error_model="numpy")


@jit
def bag_sums(indptr, indices, weights, factors):
    """sums[b] = Σ_{f in bag b} x_f · factors[f]   (n_bags × k_local)."""
    n, k = indptr.shape[0] - 1, factors.shape[1]
    out = np.zeros((n, k), dtype=factors.dtype)
    for b in range(n):
        dst = out[b]
        for t in range(indptr[b], indptr[b + 1]):
            src = factors[indices[t]]
            w = weights[t]
            for d in range(k):
                dst[d] += w * src[d]
    return out


@jit
def bag_linear(indptr, indices, weights, linear):
    """lin[b] = Σ_{f in bag b} x_f · linear[f]."""
    n = indptr.shape[0] - 1
    out = np.zeros(n, dtype=linear.dtype)
    for b in range(n):
        for t in range(indptr[b], indptr[b + 1]):
            out[b] += weights[t] * linear[indices[t]]
    return out


@jit
def pair_scores(user_sums, item_sums, pairs):
    """scores[b, m] = user_sums[b] · item_sums[pairs[b, m]]   (partial over local dims)."""
    out = np.zeros(pairs.shape, dtype=user_sums.dtype)
    for b in range(pairs.shape[0]):
        u = user_sums[b]
        for m in range(pairs.shape[1]):
            v = item_sums[pairs[b, m]]
            acc = np.float32(0.0)
            for d in range(u.shape[0]):
                acc += u[d] * v[d]
            out[b, m] = acc
    return out


@jit
def sum_gradients(user_sums, item_sums, pairs, c_diff):
    """Ascent directions of the bag sums, from the coefficients c_diff[b, m] of the
    differences x[b, m] = score(b, pairs[b, 0]) - score(b, pairs[b, m + 1]): pair (b, 0)
    gets coefficient Σ_m c_diff[b, m], pair (b, m + 1) gets -c_diff[b, m]; then
    d_user[b] = Σ_m coef[b,m] item_sums[pairs[b,m]], d_item[i] = Σ_{(b,m): pairs[b,m]=i}
    coef[b,m] user_sums[b] and d_lin[i] = Σ coef[b,m].
    A bag is *active* when some nonzero coefficient refers to it; only active bags'
    features take a step (and their regularization), the others are left alone."""
    d_user = np.zeros_like(user_sums)
    d_item = np.zeros_like(item_sums)
    d_lin = np.zeros(item_sums.shape[0], dtype=user_sums.dtype)
    user_active = np.zeros(user_sums.shape[0], dtype=np.bool_)
    item_active = np.zeros(item_sums.shape[0], dtype=np.bool_)
    for b in range(pairs.shape[0]):
        total = np.float32(0.0)
        for m in range(c_diff.shape[1]):
            total += c_diff[b, m]
        for m in range(pairs.shape[1]):
            c = total if m == 0 else -c_diff[b, m - 1]
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


@jit
def gather_gradients(indptr, indices, weights, d_bags, active, slot, touched, n, grad, count):
    """For every occurrence t of feature f in an active bag b: grad[s] += x_t · d_bags[b]
    and count[s] += 1, where s = slot[f]. A feature seen for the first time (slot -1)
    takes the next free slot n and is recorded in touched[n]. Returns the number of
    slots in use: features are deduplicated in O(occurrences), without sorting."""
    k = d_bags.shape[1]
    for b in range(indptr.shape[0] - 1):
        if not active[b]:
            continue
        src = d_bags[b]
        for t in range(indptr[b], indptr[b + 1]):
            f = indices[t]
            s = slot[f]
            w = weights[t]
            dst = grad[n if s < 0 else s]
            if s < 0:  # first occurrence: the slot's row starts from this one
                slot[f] = n
                touched[n] = f
                count[n] = 1
                for d in range(k):
                    dst[d] = w * src[d]
                n += 1
            else:
                count[s] += 1
                for d in range(k):
                    dst[d] += w * src[d]
    return n


@jit
def apply_update(table, acc, touched, grad, count, lr, reg, adagrad, slot):
    """Apply summed gradients of the touched rows to `table` (see the module docstring)
    and give their slots back (slot[f] = -1). `grad` and `count` are indexed by slot."""
    lr = np.float32(lr)
    reg = np.float32(reg)
    for t in range(touched.shape[0]):
        f = touched[t]
        slot[f] = -1
        rc = reg * count[t]
        if adagrad:
            for d in range(table.shape[1]):
                g = grad[t, d] - rc * table[f, d]
                a = acc[f, d] + g * g
                acc[f, d] = a
                table[f, d] += lr * g / np.sqrt(a)
        else:
            scale = lr / count[t]
            for d in range(table.shape[1]):
                table[f, d] += scale * (grad[t, d] - rc * table[f, d])
