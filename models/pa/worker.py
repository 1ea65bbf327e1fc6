"""A passive-aggressive worker: mini-batches learned against the weights on the
parameter server.

Per mini-batch: one pull of the rows of its active features (and the intercepts), the
exact sequential PA over its examples on that local copy (`kernels.learn`), one push of
the changed rows' deltas (added on the shards). A worker's batches follow one another,
so one worker with batches of one example is the exact online algorithm, and with
larger batches the result is the within-batch sequential one; several workers (threads
of `LocalPA`, Spark tasks) learn at once, each batch seeing the others' pushes that
arrived before its pull (bounded staleness: a batch misses at most the batches in
flight elsewhere), their deltas combined as MIXINGS says."""

from __future__ import annotations

import asyncio

import numpy as np
import scipy.sparse as sp

from psframework import AsyncClient
from models.pa.kernels import VARIANTS, learn, margins

__all__ = ["Learner", "TABLE", "INLINE_NNZ", "MIXINGS", "delta_scale", "pull_margins"]

TABLE = "weights"
# How the pushes of workers learning at once combine. "average": each batch's delta is
# divided by the number of workers (iterative parameter mixing with uniform weights,
# McDonald et al. 2010, here asynchronous); "add": deltas as they are (Hogwild). With
# one worker they are the same. Summed deltas of batches that started from the same
# weights correct the same frequent features once per worker: on noisy data PA then
# overshoots and oscillates (docs/pa.md has the numbers); averaging does not.
MIXINGS = ("average", "add")
INLINE_NNZ = 4096  # smaller batches run on the event loop: a thread hand-off costs more


def _slice(X: sp.csr_matrix, start: int, stop: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows start..stop of X as (indptr from 0, indices, data), without copies."""
    lo, hi = X.indptr[start], X.indptr[stop]
    return X.indptr[start:stop + 1] - lo, X.indices[lo:hi], X.data[lo:hi]


async def _pull_active(client: AsyncClient, model: str, n_features: int, indices: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(table rows, W, cols): the rows of the active features in `indices` and the
    intercept row pulled as W, and `indices` as rows of W."""
    active, cols = np.unique(indices, return_inverse=True)
    rows = np.append(active, n_features)
    W = await client.pull_rows(model, TABLE, rows)
    return rows, W, cols.astype(np.int32)


async def _run(nnz: int, fn, *args):
    """fn(*args), on a thread when the batch is large (the kernels release the GIL)."""
    if nnz < INLINE_NNZ:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def pull_margins(client: AsyncClient, model: str, n_features: int, X: sp.csr_matrix,
                       fit_intercept: bool) -> np.ndarray:
    """w_k · x + b_k for each example of X and weight vector, with the weights on the
    server now (one pull of the active features): (examples, n_weights) float64."""
    _, W, cols = await _pull_active(client, model, n_features, X.indices)
    return await _run(X.indices.size * W.shape[1], margins, X.indptr - X.indptr[0], cols,
                      X.data, W, fit_intercept)


def delta_scale(mixing: str, workers: int) -> float:
    """What a worker multiplies its deltas by when `workers` learn at once."""
    return 1.0 / max(workers, 1) if mixing == "average" else 1.0


class Learner:
    """Learns and scores examples of one model: `n_features` columns of CSR input, the
    intercepts in the table's last row."""

    def __init__(self, client: AsyncClient, model: str, n_features: int, *, variant: str,
                 C: float, fit_intercept: bool) -> None:
        self.client, self.model, self.n_features = client, model, n_features
        self.variant, self.C = VARIANTS.index(variant), float(C)
        self.fit_intercept = fit_intercept

    async def learn_batch(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                          labels: np.ndarray, scale: float = 1.0) -> int:
        """One mini-batch (CSR parts, labels as class indices): pull, learn, push the
        deltas times `scale` (`delta_scale`). Returns the progressive mistakes."""
        rows, W, cols = await _pull_active(self.client, self.model, self.n_features, indices)
        before = W.copy()
        mistakes = await _run(indices.size * W.shape[1], learn, indptr, cols, data, labels, W,
                              self.variant, self.C, self.fit_intercept)
        delta = W - before
        if scale != 1.0:
            delta *= scale
        changed = np.flatnonzero(delta.any(axis=1))
        if changed.size:
            await self.client.push_rows(self.model, TABLE, rows[changed], delta[changed])
        return int(mistakes)

    async def learn(self, X: sp.csr_matrix, labels: np.ndarray, batch_size: int,
                    batches: range | None = None, scale: float = 1.0) -> int:
        """Learn X's examples in mini-batches of `batch_size`, one after another (only the
        batches numbered in `batches`, default all), deltas times `scale`. Returns the
        progressive mistakes."""
        n = X.shape[0]
        mistakes = 0
        for b in batches if batches is not None else range(-(-n // batch_size)):
            start, stop = b * batch_size, min((b + 1) * batch_size, n)
            mistakes += await self.learn_batch(*_slice(X, start, stop), labels[start:stop],
                                               scale)
        return mistakes

