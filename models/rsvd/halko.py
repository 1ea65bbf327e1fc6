"""Halko, Martinsson and Tropp's randomized SVD (Algorithm 4.4 with 5.1) over the
`rsvd` model's tables: the one sequence of steps that the local API and the Spark job
both run. Only its passes over A differ (`Passes`: threads over slices of a local
matrix, or a Spark job over the row blocks); everything else is small.

    Y = A·Ω, Q = qr(Y)                                  (Ω: the `right` table's start)
    q times: Q_n = qr(Aᵀ·Q), Q = qr(A·Q_n)              (power iterations)
    Aᵀ·Q = Q_n·R  ⇒  B = Qᵀ·A = Rᵀ·Q_nᵀ;  Rᵀ = Ũ·Σ·Ṽᵀ  ⇒  A ≈ (Q·Ũ)·Σ·(Q_n·Ṽ)ᵀ

Orthonormalization is TSQR (`models.rsvd.tsqr`): every partition of a table QR-factors
its rows where they live (`qr`), the stacked R factors (partitions × width rows) are
factored here, and each partition multiplies its Q by its block of that small Q
(`multiply`). R's diagonal is made non-negative, which makes the QR of a full-rank Y
unique: so the result does not depend on how many shards or row blocks there are, beyond
rounding.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Protocol

import numpy as np

from psframework import AsyncClient
from models.rsvd import tsqr
from models.rsvd.plugin import LEFT, RIGHT

__all__ = ["Passes", "decompose", "forward", "backward", "measured", "orthonormalize",
           "passes", "on_table", "flip_signs"]


class Passes(Protocol):
    """The two multiplications by A, each over every row block of A at once."""

    async def forward(self) -> None:
        """`left`[block's rows] = A_block · `right`[block's columns], for every block."""

    async def backward(self) -> None:
        """`right`[block's columns] += A_blockᵀ · `left`[block's rows], for every block."""

    @property
    def moved(self) -> tuple[int, int]:
        """(bytes pulled, bytes pushed) by the passes so far."""


def passes(power_iter: int) -> int:
    """The passes over A a decomposition makes: 2 (q + 1)."""
    return 2 * (power_iter + 1)


async def on_table(client: AsyncClient, name: str, table: str, op: str,
                   arrays: tuple = ()) -> list:
    """Run `op` on every partition of `table` (the model's other table may have more)."""
    parts = (await client.model(name)).table(table).parts
    return await client.call(name, op, {"table": table}, arrays, parts=range(parts),
                             once=op != "extremes", idempotent=op == "extremes")


async def flip_signs(client: AsyncClient, name: str, table: str) -> None:
    """scikit-learn's svd_flip: the entry of largest magnitude of each column of `table`
    made positive, and the same columns of the other table negated with it."""
    found = np.vstack([arrays[0] for _, arrays in await on_table(client, name, table,
                                                                 "extremes")])
    signs = np.sign(found[np.abs(found).argmax(axis=0), np.arange(found.shape[1])])
    signs[signs == 0] = 1.0
    await asyncio.gather(*(on_table(client, name, t, "multiply", (np.diag(signs),))
                           for t in (LEFT, RIGHT)))


async def orthonormalize(client: AsyncClient, name: str, table: str) -> np.ndarray:
    """Replace `table` (rows × width) by its Q; return R (width × width) with a
    non-negative diagonal, so that table = Q·R (TSQR)."""
    replies = await on_table(client, name, table, "qr")
    factors = [arrays[0] for _, arrays in replies]
    blocks, r = tsqr.combine(factors, factors[0].shape[1])
    await asyncio.gather(*(client.call(name, "multiply", {"table": table}, (block,),
                                       parts=[p], once=True)
                           for p, block in enumerate(blocks)))
    return r


async def forward(client: AsyncClient, name: str, over: Passes) -> None:
    """`left` = A · `right` (zeroed first: a row without entries must read 0)."""
    await on_table(client, name, LEFT, "zero")
    await over.forward()


async def backward(client: AsyncClient, name: str, over: Passes) -> None:
    """`right` = Aᵀ · `left` (zeroed first: the blocks add their products into it)."""
    await on_table(client, name, RIGHT, "zero")
    await over.backward()


async def measured(what: str, over: Passes, run: Awaitable[None]) -> dict:
    """Run the pass `run`: {"pass": what, "seconds", "bytes_pulled", "bytes_pushed"}."""
    began, before = time.perf_counter(), over.moved
    await run
    pulled, pushed = (now - then for now, then in zip(over.moved, before))
    return {"pass": what, "seconds": time.perf_counter() - began, "bytes_pulled": pulled,
            "bytes_pushed": pushed}


async def decompose(client: AsyncClient, name: str, over: Passes, k: int, power_iter: int,
                    *, on_pass: Callable[[dict], Awaitable[None] | None] | None = None
                    ) -> np.ndarray:
    """The top k singular values of A, with U (`left`) and V (`right`) in the first k
    columns of those tables, signs as scikit-learn's randomized_svd gives them
    (svd_flip: by U, or by V when m < n). on_pass(entry) after each pass over A, with
    `measured`'s entry ("A·Ω", "Aᵀ·Q" or "A·Q_n")."""
    done_passes = 0

    async def step(what: str, direction: Callable) -> None:
        nonlocal done_passes
        entry = await measured(what, over, direction(client, name, over))
        done_passes += 1  # the master's gauges (`psframework status`) show the progress
        await client.report(name, passes=done_passes, pass_seconds=entry["seconds"],
                            pass_mb_moved=(entry["bytes_pulled"] + entry["bytes_pushed"]) / 1e6)
        done = None if on_pass is None else on_pass(entry)
        if done is not None:
            await done

    await step("A·Ω", forward)
    await orthonormalize(client, name, LEFT)
    for _ in range(power_iter):
        await step("Aᵀ·Q", backward)
        await orthonormalize(client, name, RIGHT)
        await step("A·Q_n", forward)
        await orthonormalize(client, name, LEFT)
    await step("Aᵀ·Q", backward)
    r = await orthonormalize(client, name, RIGHT)  # right: Q_n, Aᵀ·Q = Q_n·R
    u, s, vt = np.linalg.svd(r.T)  # B = Qᵀ·A = Rᵀ·Q_nᵀ
    await asyncio.gather(on_table(client, name, LEFT, "multiply", (u,)),
                         on_table(client, name, RIGHT, "multiply", (np.ascontiguousarray(vt.T),)))
    info = await client.model(name)
    m, n = info.table(LEFT).shape[0], info.table(RIGHT).shape[0]
    await flip_signs(client, name, LEFT if m >= n else RIGHT)  # as randomized_svd's default
    return s[:k]
