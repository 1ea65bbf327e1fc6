"""TSQR (Demmel et al.'s tall-skinny QR) in the two places it runs: inside a partition,
over chunks of rows, and across partitions, over their R factors. Both are the same step:
QR-factor each block of rows, QR-factor the stacked R factors, and multiply each block's
Q by its rows of that small Q.

Chunks keep each LAPACK call short: numpy holds the GIL through parts of a QR, and a
shard's event loop (its heartbeats among its work) must never wait seconds behind one.
They are factored with one BLAS thread: OpenBLAS's threaded QR of a narrow panel spins
on busy cores (17 times slower than one thread at a load of 10 on 2 cores, measured).
The R of a combination has a non-negative diagonal, which makes the QR of a full-rank
matrix unique: so Q does not depend on how the rows were cut, beyond rounding."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = ["combine", "qr_in_place", "CHUNK_ROWS"]

CHUNK_ROWS = 8192  # rows per LAPACK call: ~10 ms at 60 columns


def combine(factors: list[np.ndarray], width: int) -> tuple[list[np.ndarray], np.ndarray]:
    """For blocks whose QRs have R factors `factors` (r_i × width each): (the small
    Q's rows of each block, r_i × width, zero columns beyond the rank; R width × width,
    zero rows beyond the rank, non-negative diagonal)."""
    q, r = np.linalg.qr(np.vstack(factors))
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)
    q, r = q * signs, r * signs[:, None]
    if q.shape[1] < width:  # fewer rows in all than columns: the rest of Q is zero
        q = np.hstack([q, np.zeros((q.shape[0], width - q.shape[1]))])
        r = np.vstack([r, np.zeros((width - r.shape[0], width))])
    offsets = np.cumsum([0] + [f.shape[0] for f in factors])
    return [np.ascontiguousarray(q[a:b]) for a, b in zip(offsets, offsets[1:])], r


def qr_in_place(data: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Replace `data` (rows × width) by Q of its QR; return R (r × width, r = min(rows,
    width), non-negative diagonal)."""
    rows, width = data.shape
    edges = list(range(0, rows, chunk_rows)) + [rows]
    with threadpool_limits(1, "blas"):
        parts = [np.linalg.qr(data[a:b]) for a, b in zip(edges, edges[1:])]
    blocks, r = combine([f for _, f in parts], width)
    for (a, b), (q, _), block in zip(zip(edges, edges[1:]), parts, blocks):
        data[a:b] = q @ block
    return r[:min(rows, width)]
