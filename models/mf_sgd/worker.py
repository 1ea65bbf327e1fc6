"""One MF-SGD worker: the ratings of its users and their factors, trained against the
item side on the parameter server by either schedule.

- rotation (`sub_epoch`): in sub-epoch s of P, worker w pulls item block (w + s) mod P
  once, runs SGD over its ratings of those items, and pushes the block back (replace).
  No two workers hold one block at a time, so the result is that of a sequential SGD.
- async (`batches`): mini-batches of this worker's ratings, each pulling its items' rows,
  updating them locally and pushing the deltas (add), `concurrent` batches in flight.

The order of an epoch is seeded: rotation visits the worker's ratings of block b (in
input order) in `default_rng([seed, worker, epoch, b]).permutation(...)`, async all its
ratings in `default_rng([seed, worker, epoch]).permutation(...)`. Shuffles, gathers and
kernels run on a thread (they release the GIL), so the workers of one process train in
parallel.
"""

from __future__ import annotations

import asyncio

import numpy as np

from psframework import AsyncClient, ConfigError
from models.mf_sgd.kernels import sgd, squared_errors

__all__ = ["Worker", "block_edges", "pull_item_side", "push_item_side"]

TABLE = "items"  # the model's one table: item factors, and the item bias in the last column


def block_edges(n: int, parts: int) -> np.ndarray:
    """Ids 0..n-1 cut into `parts` contiguous blocks as np.array_split cuts them: block b
    is [edges[b], edges[b + 1]). Workers own blocks of users (contiguous, so no two
    threads write one cache line of the users' factors and biases) and train blocks of
    items."""
    return np.concatenate([[0], np.cumsum([b.size for b in np.array_split(np.arange(n), parts)])])


def ids_dtype(n: int) -> type:
    """The narrowest integer dtype for ids below n (int32 halves what the kernels read)."""
    return np.int32 if n < 2**31 else np.int64


async def pull_item_side(client: AsyncClient, model: str, ids: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The item factors and biases of `ids`, in one pull, as contiguous arrays."""
    side = await client.pull_rows(model, TABLE, ids)
    return np.ascontiguousarray(side[:, :-1]), np.ascontiguousarray(side[:, -1])


async def push_item_side(client: AsyncClient, model: str, ids: np.ndarray, H: np.ndarray,
                         bi: np.ndarray) -> None:
    """Push factors and biases of `ids` (combined with the table's aggregator)."""
    await client.push_rows(model, TABLE, ids, np.column_stack([H, bi]))


class Worker:
    def __init__(self, client: AsyncClient, model: str, index: int, users: np.ndarray,
                 items: np.ndarray, ratings: np.ndarray, W: np.ndarray, bu: np.ndarray, *,
                 mu: float, reg: float, biases: bool, seed: int,
                 edges: np.ndarray | None = None) -> None:
        """W and bu: factors and biases indexed by user id (this worker writes only its
        users' rows). edges: the item blocks of rotation (`block_edges`); with them the
        worker keeps its ratings grouped by block, in input order within each."""
        self.client, self.model, self.index = client, model, index
        self.users: np.ndarray = users.astype(ids_dtype(W.shape[0]))
        self.items: np.ndarray = items.astype(ids_dtype(int(items.max(initial=0)) + 1))
        self.ratings = ratings.astype(np.float32)
        self.W, self.bu = W, bu
        self.mu, self.reg, self.biases, self.seed = float(mu), float(reg), biases, seed
        self.edges = edges
        if edges is not None:
            block = np.searchsorted(edges, self.items, side="right") - 1
            grouped = np.argsort(block, kind="stable")
            self.users, self.items = self.users[grouped], self.items[grouped]
            self.ratings = self.ratings[grouped]
            counts = np.bincount(block, minlength=edges.size - 1)  # block b's ratings are
            self.starts = np.concatenate([[0], np.cumsum(counts)])  # [starts[b], starts[b + 1])

    @property
    def _edges(self) -> np.ndarray:
        """The item blocks, which rotation's workers are given."""
        if self.edges is None:
            raise ConfigError("rotation needs the workers' item blocks (edges)")
        return self.edges

    def _sgd(self, picked: np.ndarray, items: np.ndarray, first: int, H: np.ndarray,
             bi: np.ndarray, lr: float) -> float:
        """SGD over the ratings `picked` in that order, their items' rows being
        items - first in H and bi (gathered first: a pass over contiguous arrays is twice
        as fast as one that jumps)."""
        sse = sgd(self.users.take(picked), items, self.ratings.take(picked), self.W, self.bu,
                  H, bi, first, self.mu, float(lr), self.reg, self.biases)
        # before anything reaches the server: the error, or the last updates, may overflow
        if not (np.isfinite(sse) and np.isfinite(bi).all() and np.isfinite(H).all()):
            raise ConfigError(f"MF-SGD diverged at step size {lr:g} (squared error {sse}, "
                              "parameters no longer finite); lower the step size (or, with "
                              "the async schedule, the batch size or the batches in flight)")
        return sse

    async def _thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def train_block(self, epoch: int, b: int, H: np.ndarray, bi: np.ndarray,
                    lr: float) -> float:
        """Rotation's compute for item block b (H, bi: its rows): SGD over this worker's
        ratings of the block, in the epoch's order for it; the sum of squared errors."""
        start, stop = int(self.starts[b]), int(self.starts[b + 1])
        rng = np.random.default_rng([self.seed, self.index, epoch, b])
        picked = start + rng.permutation(stop - start)
        return self._sgd(picked, self.items.take(picked), int(self._edges[b]), H, bi, lr)

    async def sub_epoch(self, epoch: int, s: int, lr: float) -> tuple[float, int]:
        """Rotation: train item block (index + s) mod P on one pull and one push.
        Returns (sum of squared errors, ratings)."""
        edges = self._edges
        b = (self.index + s) % (edges.size - 1)
        count = int(self.starts[b + 1] - self.starts[b])
        if count == 0:
            return 0.0, 0
        ids = np.arange(edges[b], edges[b + 1])
        H, bi = await pull_item_side(self.client, self.model, ids)
        sse = await self._thread(self.train_block, epoch, b, H, bi, lr)
        await push_item_side(self.client, self.model, ids, H, bi)
        return sse, count

    async def batches(self, epoch: int, lr: float, batch_size: int,
                      concurrent: int) -> tuple[float, int]:
        """Async: mini-batches of the epoch's order, each one pull, local SGD and one
        push of deltas; a batch starts when fewer than `concurrent` are in flight."""
        order = np.random.default_rng([self.seed, self.index, epoch]).permutation(
            self.users.size)
        gate = asyncio.Semaphore(concurrent)

        async def one(picked: np.ndarray) -> float:
            try:
                ids, rows = np.unique(self.items[picked], return_inverse=True)
                H, bi = await pull_item_side(self.client, self.model, ids)
                H0, b0 = H.copy(), bi.copy()
                sse = await self._thread(self._sgd, picked, rows, 0, H, bi, lr)
                await push_item_side(self.client, self.model, ids, H - H0, bi - b0)
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

    async def squared_errors(self, H: np.ndarray, bi: np.ndarray) -> float:
        """Σ (r - prediction)² over this worker's ratings with this item side, on a thread
        (workers score in parallel)."""
        return await self._thread(squared_errors, self.users, self.items, self.ratings,
                                  self.W, self.bu, H, bi, self.mu, self.biases)
