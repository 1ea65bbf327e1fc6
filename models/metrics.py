"""Ranking metrics for implicit-feedback recommenders, shared by every model.

All metrics rank, for each user, the *candidate* items and compare the ranking with the
user's held-out positives:

- ``scores`` is either a dense ``(n_users, n_items)`` array (row ``u`` scores user ``u``,
  the same row order as ``test``) or a callable ``score(user_ids) -> (len(user_ids),
  n_items)``. The callable form lets large catalogs be evaluated ``batch_size`` users at a
  time; it is called with ascending int64 row indices of ``test``, only for users that have
  something to evaluate. Higher scores rank first. ``-inf`` and ``+inf`` are allowed
  (e.g. to filter items out); NaN is an error.
- ``test`` is a scipy.sparse ``(n_users, n_items)`` matrix; every stored nonzero is a
  positive.
- ``train`` (optional, same shape): with ``exclude_train=True`` (the default) a user's
  training items are removed from that user's ranking, as LightFM does: they are never
  hits and never negatives, and a test item that is also a training item is not counted
  as a positive. With ``exclude_train=False``, ``train`` is ignored.

Definitions, per user, with ``P`` the positives among the candidates, ``N`` the other
candidates and ``hits`` the positives in the top ``k``:

- precision@k = hits / k (always ``k``, even when fewer than ``k`` candidates exist);
- recall@k = hits / |P|;  hit rate@k = 1 if hits > 0 else 0;
- NDCG@k = DCG / ideal DCG with binary gains and discount ``1 / log2(rank + 1)``
  (rank from 1), the ideal placing ``min(k, |P|)`` positives first;
- AUC = fraction of (positive, negative) pairs the scores order correctly, ties count 1/2.

Ties in the top ``k`` are broken by item index: among equal scores the lower index ranks
first (the order a stable sort would give). Users with no positive are skipped; AUC also
skips users with no negative candidate. Each function returns the mean over the users it
did not skip, or with ``per_user=True`` an array of length ``n_users`` holding NaN for the
skipped users. The cost is a few passes over each ``(batch_size, n_items)`` block: the top
``k`` by ``np.partition``, AUC by mid-ranks from one sort per row and a binary search per
positive, never by pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Union

import numpy as np
import scipy.sparse as sp

__all__ = ["Scores", "auc", "evaluate", "hit_rate_at_k", "ndcg_at_k", "precision_at_k",
           "recall_at_k"]

Scores = Union[np.ndarray, Callable[[np.ndarray], np.ndarray]]
"""A dense (n_users, n_items) score array, or ``score(user_ids) -> (len, n_items)``."""

_TOPK = ("precision", "recall", "hit_rate", "ndcg")


def precision_at_k(scores: Scores, test: sp.spmatrix, k: int = 10, *,
                   train: sp.spmatrix | None = None, exclude_train: bool = True,
                   per_user: bool = False, batch_size: int = 512) -> float | np.ndarray:
    """Fraction of the top ``k`` that are test positives (see the module docstring)."""
    return _one("precision", scores, test, k, train, exclude_train, per_user, batch_size)


def recall_at_k(scores: Scores, test: sp.spmatrix, k: int = 10, *,
                train: sp.spmatrix | None = None, exclude_train: bool = True,
                per_user: bool = False, batch_size: int = 512) -> float | np.ndarray:
    """Fraction of the user's test positives found in the top ``k``."""
    return _one("recall", scores, test, k, train, exclude_train, per_user, batch_size)


def hit_rate_at_k(scores: Scores, test: sp.spmatrix, k: int = 10, *,
                  train: sp.spmatrix | None = None, exclude_train: bool = True,
                  per_user: bool = False, batch_size: int = 512) -> float | np.ndarray:
    """Fraction of users with at least one test positive in their top ``k``."""
    return _one("hit_rate", scores, test, k, train, exclude_train, per_user, batch_size)


def ndcg_at_k(scores: Scores, test: sp.spmatrix, k: int = 10, *,
              train: sp.spmatrix | None = None, exclude_train: bool = True,
              per_user: bool = False, batch_size: int = 512) -> float | np.ndarray:
    """Normalized discounted cumulative gain of the top ``k``, binary relevance."""
    return _one("ndcg", scores, test, k, train, exclude_train, per_user, batch_size)


def auc(scores: Scores, test: sp.spmatrix, *, train: sp.spmatrix | None = None,
        exclude_train: bool = True, per_user: bool = False,
        batch_size: int = 512) -> float | np.ndarray:
    """Probability that a random positive outscores a random negative, ties counting 1/2."""
    return _one("auc", scores, test, 1, train, exclude_train, per_user, batch_size)


def evaluate(scores: Scores, test: sp.spmatrix, *, train: sp.spmatrix | None = None,
             k: int = 10, exclude_train: bool = True, per_user: bool = False,
             batch_size: int = 512) -> dict[str, float] | dict[str, np.ndarray]:
    """All metrics in one pass over the scores.

    Returns ``{"precision@k", "recall@k", "hit_rate@k", "ndcg@k", "auc"}`` (with ``k``
    spelled out, e.g. ``"precision@10"``): means, or per-user arrays with ``per_user``.
    """
    found = _per_user(scores, test, k, train, exclude_train, batch_size, _TOPK + ("auc",))
    out = {(name if name == "auc" else f"{name}@{k}"): values
           for name, values in found.items()}
    return out if per_user else {name: _mean(values) for name, values in out.items()}


def _one(name: str, scores: Scores, test: sp.spmatrix, k: int,
         train: sp.spmatrix | None, exclude_train: bool, per_user: bool,
         batch_size: int) -> float | np.ndarray:
    values = _per_user(scores, test, k, train, exclude_train, batch_size, (name,))[name]
    return values if per_user else _mean(values)


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def _per_user(scores: Scores, test: sp.spmatrix, k: int, train: sp.spmatrix | None,
              exclude_train: bool, batch_size: int,
              wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    test = _binary_csr(test, "test")
    n_users, n_items = test.shape
    if train is not None and exclude_train:
        train = _binary_csr(train, "train")
        if train.shape != test.shape:
            raise ValueError(f"train has shape {train.shape} but test has {test.shape}; "
                             "both must be (n_users, n_items) over the same ids")
    else:
        train = None
    score = _as_callable(scores, test.shape)
    out = {name: np.full(n_users, np.nan) for name in wanted}
    for users, key, relevant in _batches(score, test, train, batch_size):
        if any(name in _TOPK for name in wanted):
            for name, values in _top_k_metrics(key, relevant, k).items():
                if name in out:
                    out[name][users] = values
        if "auc" in out:
            out["auc"][users] = _auc(key, relevant)
    return out


def _binary_csr(matrix: sp.spmatrix, name: str) -> sp.csr_matrix:
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy.sparse matrix (users x items), got "
                        f"{type(matrix).__name__}; wrap it with scipy.sparse.csr_matrix")
    csr = sp.csr_matrix(matrix, copy=True)
    csr.eliminate_zeros()
    return csr


def _as_callable(scores: Scores, shape: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    if callable(scores):
        return scores
    dense = np.asarray(scores)
    if dense.shape != shape:
        raise ValueError(f"scores has shape {dense.shape} but test has {shape}; pass one "
                         "row of item scores per row of test, or a callable")
    return lambda users: dense[users]


def _batches(score: Callable[[np.ndarray], np.ndarray], test: sp.csr_matrix,
             train: sp.csr_matrix | None,
             batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (users, key, relevant) where ``key`` is the negated score of each candidate
    and NaN for excluded items (NaN sorts last), so a smaller key ranks first."""
    users_with_tests = np.flatnonzero(np.diff(test.indptr)).astype(np.int64)
    n_items = test.shape[1]
    for start in range(0, users_with_tests.size, batch_size):
        users = users_with_tests[start:start + batch_size]
        block = np.asarray(score(users))
        if block.shape != (users.size, n_items):
            raise ValueError(f"the score callable returned shape {block.shape} for "
                             f"{users.size} users; expected ({users.size}, {n_items})")
        key = -np.asarray(block, dtype=np.float64)
        if np.isnan(key).any():
            raise ValueError("scores contain NaN; a ranking needs comparable scores "
                             "(use -inf to push an item to the bottom)")
        relevant = test[users].toarray() != 0
        if train is not None:
            seen = train[users].toarray() != 0
            key[seen] = np.nan
            relevant &= ~seen
        yield users, key, relevant


def _top_k_metrics(key: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    n_rows, n_items = key.shape
    candidate = ~np.isnan(key)
    n_candidates = candidate.sum(axis=1)
    if k >= n_items:
        top = candidate
    else:
        kth = np.partition(key, k - 1, axis=1)[:, k - 1:k]
        better = key < kth
        tied = key == kth
        room = k - better.sum(axis=1, keepdims=True)
        top = better | tied
        # Only rows with more ties at the boundary than places left need the index order.
        crowded = np.flatnonzero(tied.sum(axis=1) > room[:, 0])
        top[crowded] = better[crowded] | (
            tied[crowded] & (np.cumsum(tied[crowded], axis=1) <= room[crowded]))
        top = np.where((n_candidates <= k)[:, None], candidate, top)
    rows, cols = np.nonzero(top)
    order = np.lexsort((cols, key[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    first = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=n_rows))[:-1]))
    rank = np.arange(rows.size) - first[rows]
    is_hit = relevant[rows, cols]
    hits = np.bincount(rows, weights=is_hit, minlength=n_rows)
    dcg = np.bincount(rows, weights=is_hit / np.log2(rank + 2.0), minlength=n_rows)
    n_relevant = relevant.sum(axis=1)
    ideal = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))))
    valid = n_relevant > 0
    nan = np.full(n_rows, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "precision": np.where(valid, hits / k, nan),
            "recall": np.where(valid, hits / n_relevant, nan),
            "hit_rate": np.where(valid, (hits > 0).astype(float), nan),
            "ndcg": np.where(valid, dcg / ideal[np.minimum(n_relevant, k)], nan),
        }


def _auc(key: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Mann-Whitney U from mid-ranks. Each row is sorted once (excluded items, NaN keys,
    sort last); each positive's rank is then found by a vectorized binary search."""
    n_rows = key.shape[0]
    ordered = np.sort(key, axis=1)
    rows, cols = np.nonzero(relevant)
    value = key[rows, cols]
    better = _count_sorted(ordered, rows, lambda v: v < value)
    not_worse = _count_sorted(ordered, rows, lambda v: v <= value)
    # 1-based mid-rank among the candidates, counted from the best.
    midrank = better + (not_worse - better + 1) / 2.0
    n_pos = relevant.sum(axis=1)
    n_neg = (~np.isnan(key)).sum(axis=1) - n_pos
    rank_sum = np.bincount(rows, weights=midrank, minlength=n_rows)
    # Pairs with the negative ranked above the positive (ties 1/2) are the excess of the
    # positives' rank sum over its least possible value.
    wrong = rank_sum - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), 1.0 - wrong / (n_pos * n_neg), np.nan)


def _count_sorted(ordered: np.ndarray, rows: np.ndarray,
                  holds: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """For each query ``j``, how many leading entries of ``ordered[rows[j]]`` satisfy
    ``holds`` (a predicate true on a prefix of every row), by bisection on all at once."""
    lo = np.zeros(rows.size, dtype=np.int64)
    hi = np.full(rows.size, ordered.shape[1], dtype=np.int64)
    while (active := lo < hi).any():
        mid = (lo + hi) // 2
        inside = holds(ordered[rows, np.minimum(mid, ordered.shape[1] - 1)]) & active
        lo = np.where(inside, mid + 1, lo)
        hi = np.where(active & ~inside, mid, hi)
    return lo
