"""The training loop of one worker: shuffle, batch, sample, two round trips per batch,
with up to `concurrent_batches` batches in flight so the network and the shards stay
busy. Everything random comes from one seeded generator and is drawn in batch order,
so a run with one batch in flight is deterministic."""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from psframework import AsyncClient, RemoteError
from models.fmpair import losses
from models.fmpair.features import FeatureSpace
from models.fmpair.plugin import UNCACHED
from models.fmpair.sampling import NegativeSampler

__all__ = ["Trainer", "EpochStats"]


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float  # mean over the pairs that counted
    pairs: int  # positives processed
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """Trains the positives of `train` (users × items; each stored value is the
    positive's weight in the loss) on the model `model`."""

    def __init__(self, client: AsyncClient, model: str, space: FeatureSpace,
                 train: sp.csr_matrix, sampler: NegativeSampler, *, loss: str = "bpr",
                 batch_size: int = 256, num_negatives: int = 10, concurrent_batches: int = 2,
                 seed: int = 0) -> None:
        self.client = client
        self.model = model
        self.space = space
        self.sampler = sampler
        self.loss = loss
        self.batch_size = batch_size
        self.concurrent_batches = concurrent_batches
        self.m = losses.candidates_per_example(loss, sampler.kind, num_negatives)
        self.rng = np.random.default_rng(seed)
        coo = train.tocoo()
        self.users, self.items = coo.row.astype(np.int64), coo.col.astype(np.int64)
        # each positive's weight in the loss is its value in `train` (1: unweighted)
        self.weights = None if np.all(coo.data == 1) else coo.data.astype(np.float64)
        self._key_prefix = int.from_bytes(os.urandom(3), "little") << 32
        self._keys = 0
        self.dropped = 0  # batch steps lost with a partition restored from a checkpoint

    async def _dotprod(self, batch: losses.Batch, earlier: list[tuple[int, np.ndarray]],
                       weights: np.ndarray | None) -> tuple[int, np.ndarray, float, int]:
        """Round trip 1 of `batch` (its positives weighing `weights`, None: 1), carrying
        the coefficients of `earlier` batches (their round trip 2). Returns (key,
        coefficients, loss sum, pairs counted)."""
        self._keys += 1
        key = self._key_prefix | self._keys
        args = {"key": key, "adjust": [k for k, _ in earlier]}
        arrays = batch.arrays + tuple(c for _, c in earlier)
        # without coefficients a dotprod only caches under its key: running it twice is harmless
        try:
            replies = await self.client.call(self.model, "dotprod", args, arrays,
                                             once=bool(earlier), idempotent=not earlier)
        except RemoteError as e:
            if not earlier or not _uncached(e):
                raise
            # a partition was restored from a checkpoint (its shard died without a
            # backup): the cached sums of the batches in flight went with it, so their
            # steps are dropped there — the batch itself goes again, on its own
            self.dropped += len(earlier)
            replies = await self.client.call(self.model, "dotprod", {"key": key, "adjust": []},
                                             batch.arrays, idempotent=True)
        # each shard: its part of the differences
        x: np.ndarray = functools.reduce(operator.add, (out[0] for _, out in replies))
        coef, total, counted = losses.coefficients(self.loss, x, batch.valid,
                                                   self.space.n_items, weights)
        return key, coef, total, counted

    async def _adjust(self, key: int, coef: np.ndarray) -> None:
        try:
            await self.client.call(self.model, "adjust", {"key": key}, (coef,), once=True)
        except RemoteError as e:
            if not _uncached(e):
                raise
            self.dropped += 1  # as in _dotprod: lost with a restored partition

    async def epoch(self, number: int, on_batch: Callable[[int, float, int], None] | None = None
                    ) -> EpochStats:
        """One pass over the positives; `on_batch(positives, loss sum, pairs counted)`.

        A batch's coefficients travel with the next batch's dotprod, which the shards
        apply before scoring, so every batch costs one round trip and the model a batch
        is scored on is the same as with a separate adjust (all batches that finished
        before it was sent are in). The last ones go out as plain `adjust`s."""
        started = time.perf_counter()
        order = self.rng.permutation(self.users.size)
        in_flight: set[asyncio.Task] = set()
        pending: list[tuple[int, np.ndarray]] = []
        total, counted = 0.0, 0

        def collect(done: set[asyncio.Task]) -> None:
            nonlocal total, counted
            for task in sorted(done, key=lambda t: t.seq):  # type: ignore[attr-defined]
                key, coef, t, c = task.result()
                pending.append((key, coef))
                total += t
                counted += c
                if on_batch is not None:
                    on_batch(task.size, t, c)  # type: ignore[attr-defined]

        try:
            for seq, start in enumerate(range(0, order.size, self.batch_size)):
                idx = order[start:start + self.batch_size]
                batch = losses.prepare(self.users[idx], self.items[idx], self.space,
                                       self.sampler, self.rng, self.m, positives=idx)
                if len(in_flight) >= self.concurrent_batches:
                    done, in_flight = await asyncio.wait(in_flight,
                                                         return_when=asyncio.FIRST_COMPLETED)
                    collect(done)
                weights = None if self.weights is None else self.weights[idx]
                task = asyncio.ensure_future(self._dotprod(batch, pending, weights))
                task.size, task.seq = idx.size, seq  # type: ignore[attr-defined]
                pending = []
                in_flight.add(task)
            if in_flight:
                done, in_flight = await asyncio.wait(in_flight)
                collect(done)
            await asyncio.gather(*(self._adjust(key, coef) for key, coef in pending))
        finally:
            for task in in_flight:
                task.cancel()
        return EpochStats(number, total / max(counted, 1), int(order.size),
                          time.perf_counter() - started)


def _uncached(e: RemoteError) -> bool:
    """A shard found no cached sums for a batch: its partition was restored from a
    checkpoint since the batch's dotprod (or the sums expired)."""
    return UNCACHED in e.message
