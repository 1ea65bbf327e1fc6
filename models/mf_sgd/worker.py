"""One MF-SGD worker: the ratings of its users and their factors, trained against the
item side on the parameter server by either schedule.

- rotation (`block`): pull a block of items once, run SGD over this worker's ratings of
  those items, push the block back (replace). The caller gives each worker a different
  block per sub-epoch, so no two workers touch one item at a time and the result is that
  of a sequential SGD.
- async (`batches`): mini-batches of this worker's ratings, each pulling its items' rows,
  updating them locally and pushing the deltas (add), `concurrent` batches in flight.

Every epoch visits the worker's ratings in the order `order(epoch)`, seeded by (seed,
worker, epoch); kernels run on a thread (they release the GIL), so workers of one
process train in parallel."""

from __future__ import annotations

import asyncio

import numpy as np

from psframework import AsyncClient
from models.mf_sgd.kernels import sgd, squared_errors

__all__ = ["Worker", "block_edges", "pull_item_side"]


def block_edges(n: int, parts: int) -> np.ndarray:
    """Ids 0..n-1 cut into `parts` contiguous blocks as np.array_split cuts them: block b
    is [edges[b], edges[b + 1]). Workers own blocks of users (contiguous, so no two
    threads write one cache line of the users' factors and biases) and train blocks of
    items."""
    return np.concatenate([[0], np.cumsum([b.size for b in np.array_split(np.arange(n), parts)])])


async def pull_item_side(client: AsyncClient, model: str, ids: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The item factors and biases of `ids`, both pulls at once."""
    return await asyncio.gather(client.pull_rows(model, "item_factors", ids),
                                client.pull_rows(model, "item_bias", ids))


class Worker:
    def __init__(self, client: AsyncClient, model: str, index: int, users: np.ndarray,
                 items: np.ndarray, ratings: np.ndarray, W: np.ndarray, bu: np.ndarray, *,
                 mu: float, reg: float, biases: bool, seed: int,
                 edges: np.ndarray | None = None) -> None:
        """W and bu: factors and biases indexed by user id (this worker writes only its
        users' rows). edges: the item blocks of rotation (`block_edges`)."""
        self.client, self.model, self.index = client, model, index
        self.users, self.items = users.astype(np.int64), items.astype(np.int64)
        self.ratings = ratings.astype(np.float32)
        self.W, self.bu = W, bu
        self.mu, self.reg, self.biases, self.seed = float(mu), float(reg), biases, seed
        self.edges = edges
        if edges is not None:  # the block of each rating, once; int16 sorts by radix
            kind = np.int16 if edges.size <= 2**15 else np.int32
            self._block = (np.searchsorted(edges, self.items, side="right") - 1).astype(kind)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.index, epoch]).permutation(self.users.size)

    def by_block(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotation: `order` grouped by item block (the `edges` given), in order within
        each: (grouped, starts), block b's ratings being grouped[starts[b]:starts[b + 1]].
        One stable sort per epoch instead of a pass over every rating per sub-epoch."""
        blocks = self._block[order]
        grouped = order[np.argsort(blocks, kind="stable")]
        counts = np.bincount(blocks, minlength=self.edges.size - 1)
        return grouped, np.concatenate([[0], np.cumsum(counts)])

    async def _train(self, picked: np.ndarray, rows: np.ndarray, H: np.ndarray,
                     bi: np.ndarray, lr: float) -> float:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, sgd, self.users[picked], rows, self.ratings[picked], self.W, self.bu, H, bi,
            self.mu, float(lr), self.reg, self.biases)

    async def squared_errors(self, H: np.ndarray, bi: np.ndarray) -> float:
        """Σ (r - prediction)² over this worker's ratings with this item side, on a thread
        (workers score in parallel)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, squared_errors, self.users, self.items,
                                          self.ratings, self.W, self.bu, H, bi, self.mu,
                                          self.biases)

    async def _push(self, ids: np.ndarray, H: np.ndarray, bi: np.ndarray) -> None:
        await asyncio.gather(self.client.push_rows(self.model, "item_factors", ids, H),
                             self.client.push_rows(self.model, "item_bias", ids, bi))

    async def block(self, picked: np.ndarray, lo: int, hi: int, lr: float) -> tuple[float, int]:
        """Rotation: train the ratings `picked` (this worker's of items [lo, hi), from
        `by_block`), in that order, on one pull and one push of the block. Returns (sum of
        squared errors, ratings)."""
        if picked.size == 0:
            return 0.0, 0
        ids = np.arange(lo, hi)
        H, bi = await pull_item_side(self.client, self.model, ids)
        sse = await self._train(picked, self.items[picked] - lo, H, bi, lr)
        await self._push(ids, H, bi)
        return sse, int(picked.size)

    async def batches(self, order: np.ndarray, lr: float, batch_size: int,
                      concurrent: int) -> tuple[float, int]:
        """Async: mini-batches of `order`, each one pull, local SGD and one push of deltas;
        a batch starts when fewer than `concurrent` are in flight."""
        gate = asyncio.Semaphore(concurrent)

        async def one(picked: np.ndarray) -> float:
            try:
                ids, rows = np.unique(self.items[picked], return_inverse=True)
                H, bi = await pull_item_side(self.client, self.model, ids)
                H0, b0 = H.copy(), bi.copy()
                sse = await self._train(picked, rows.astype(np.int64), H, bi, lr)
                await self._push(ids, H - H0, bi - b0)
                return sse
            finally:
                gate.release()
        tasks = []
        try:
            for start in range(0, order.size, batch_size):
                await gate.acquire()
                tasks.append(asyncio.ensure_future(one(order[start:start + batch_size])))
            return float(sum(await asyncio.gather(*tasks))), int(order.size)
        finally:
            for task in tasks:
                task.cancel()
