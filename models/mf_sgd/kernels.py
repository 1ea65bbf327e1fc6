"""The SGD step of MF-SGD (Surprise's SVD update), over ratings in the order given."""

from __future__ import annotations

import numba

__all__ = ["sgd", "squared_errors"]


@numba.njit(nogil=True, cache=True)
def sgd(users, items, ratings, W, bu, H, bi, first, mu, lr, reg, biases):
    """For each rating t, in order: user users[t], the item in row items[t] - first of H
    and bi (they hold items first, first + 1, ...). Updates W, bu (the worker's users)
    and H, bi (the items it holds) in place; returns the sum of squared errors before
    each update."""
    total = 0.0
    rank = W.shape[1]
    for t in range(users.shape[0]):
        u, j = users[t], items[t] - first
        pred = mu
        if biases:
            pred += bu[u] + bi[j]
        for f in range(rank):
            pred += W[u, f] * H[j, f]
        err = ratings[t] - pred
        total += err * err
        if biases:
            bu[u] += lr * (err - reg * bu[u])
            bi[j] += lr * (err - reg * bi[j])
        for f in range(rank):
            w, h = W[u, f], H[j, f]
            W[u, f] = w + lr * (err * h - reg * w)
            H[j, f] = h + lr * (err * w - reg * h)
    return total


@numba.njit(nogil=True, cache=True)
def squared_errors(users, items, ratings, W, bu, H, bi, mu, biases):
    """Σ (r - prediction)² over the ratings (for train and validation RMSE)."""
    total = 0.0
    for t in range(users.shape[0]):
        u, i = users[t], items[t]
        pred = mu
        if biases:
            pred += bu[u] + bi[i]
        for f in range(W.shape[1]):
            pred += W[u, f] * H[i, f]
        err = ratings[t] - pred
        total += err * err
    return total
