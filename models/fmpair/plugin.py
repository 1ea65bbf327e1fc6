"""The FMPair model plugin: tables and server-side ops (registered as `fmpair`).

Tables, with S partitions (one per shard by default):
- `factors`  features × dims, split by **columns**: partition p holds dims of block p for
  every feature, so a shard can sum whole feature bags over its dims on its own;
- `linear`   features, one partition (it lives with partition 0);
- `factors_acc`, `linear_acc`: AdaGrad accumulators beside them (optimizer "adagrad").

One mini-batch is two round trips to every partition (see DESIGN.md, "Data flow"):
`dotprod` sums the user bags and item bags over the partition's dims, returns the
partial scores of the requested (user, item) pairs and caches the sums under a key;
`adjust` takes one coefficient per pair — the ascent direction d objective / d score —
and applies the gradient to every feature in the cached bags, then drops the entry.
Entries not adjusted within `cache_ttl` seconds expire, so lost or retried batches
never leak memory. BPR, crossbatch-BPR and WARP differ only in the pairs and the
coefficients, which the worker computes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from psframework import ConfigError, Model, RemoteError, ShapeError, TableSpec, init, udf
from models.fmpair import kernels
from models.fmpair.losses import standard_pairs
from models.fmpair.spec import SPEC

__all__ = ["FMPairPlugin"]

#: What a shard says when a batch's adjust finds no cached dotprod: it expired, or the
#: partition was restored from a checkpoint since (a failover without a backup)
UNCACHED = "no cached dotprod"

MAX_CACHED_BATCHES = 10_000


def _config(config: dict) -> dict:
    c = SPEC.config(config)
    n = c.get("n_features")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"fmpair config.n_features must be a positive integer, got {n!r}")
    return c


Bags = tuple[np.ndarray, np.ndarray, np.ndarray]  # indptr, indices, weights

class FMPairPlugin(Model):
    def __init__(self, config: dict) -> None:
        super().__init__(_config(config))
        self._cache: OrderedDict[Any, tuple] = OrderedDict()
        self._lock = threading.Lock()
        self._scratch = threading.local()

    # -- tables --------------------------------------------------------------------------
    def tables(self) -> list[TableSpec]:
        c = self.config
        n, k = c["n_features"], c["dims"]
        tables = [
            TableSpec("factors", (n, k), "float32", partition_by="cols",
                      init=init.uniform(-0.5 / k, 0.5 / k, seed=c["seed"])),
            TableSpec("linear", (n,), "float32", parts=1),
        ]
        if c["optimizer"] == "adagrad":
            tables += [TableSpec("factors_acc", (n, k), "float32", partition_by="cols",
                                 init=init.constant(1.0)),
                       TableSpec("linear_acc", (n,), "float32", parts=1, init=init.constant(1.0))]
        return tables

    # -- the batch cache -------------------------------------------------------------------
    def _remember(self, key: Any, entry: tuple) -> None:
        now = time.monotonic()
        with self._lock:
            while self._cache and (len(self._cache) >= MAX_CACHED_BATCHES or
                                   next(iter(self._cache.values()))[0] < now - self.config["cache_ttl"]):
                self._cache.popitem(last=False)
            self._cache[key] = (now, entry)

    def _peek(self, key: Any) -> tuple:
        with self._lock:
            found = self._cache.get(key)
        if found is None or found[0] < time.monotonic() - self.config["cache_ttl"]:
            raise RemoteError(f"{UNCACHED} for batch {key!r}: it expired (cache_ttl="
                              f"{self.config['cache_ttl']}s) or was never made; run dotprod again")
        return found[1]

    def _forget(self, key: Any) -> None:
        with self._lock:
            if self._cache.pop(key, None) is None:
                raise RemoteError(f"batch {key!r} was adjusted twice at once; send adjusting "
                                  "requests with once=True, each key once")

    # -- ops -------------------------------------------------------------------------------
    def _bags(self, arrays: tuple, at: int, what: str) -> Bags:
        """CSR bags (indptr, indices, weights), int32 or int64 indices; an empty indptr
        means one feature per bag and empty weights mean weight 1 (the compact form)."""
        indptr, indices, weights = arrays[at:at + 3]
        n = self.config["n_features"]
        if (indptr.dtype.kind != "i" or indices.dtype.kind != "i" or indptr.ndim != 1
                or indices.ndim != 1 or weights.dtype != np.float32):
            raise ShapeError(f"{what} bags must be (indptr, indices: integers; weights: float32)")
        if indptr.size == 0:
            indptr = np.arange(indices.size + 1, dtype=indices.dtype)
        if weights.size == 0 and indices.size:
            weights = np.ones(indices.size, np.float32)
        if (indptr[0] != 0 or indptr[-1] != indices.size or indices.shape != weights.shape
                or np.any(np.diff(indptr) < 0)):
            raise ShapeError(f"{what} bags: indptr, indices and weights do not fit together")
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise ShapeError(f"{what} feature index out of range (model has {n} features)")
        return indptr, indices, weights

    def _batch(self, arrays: tuple) -> tuple[Bags, Bags, np.ndarray]:
        users = self._bags(arrays, 0, "user")
        items = self._bags(arrays, 3, "item")
        b, n_items = users[0].size - 1, items[0].size - 1
        pairs = arrays[6]
        if pairs.size == 0:  # the standard layout: candidates follow the positives
            m = n_items // b - 1 if b else 0
            if b == 0 or m < 1 or n_items != b * (1 + m):
                raise ShapeError("without pairs, item bags must be B positives then B·M candidates")
            pairs = standard_pairs(b, m)
        if pairs.dtype.kind != "i" or pairs.ndim != 2 or pairs.shape[0] != b or pairs.shape[1] < 2:
            raise ShapeError("pairs must be integers: user bags × (positive + candidates)")
        if pairs.min() < 0 or pairs.max() >= n_items:
            raise ShapeError("pairs refer to item bags that were not sent")
        return users, items, pairs

    @udf(threaded=True)
    def dotprod(self, view, args, arrays):
        """This partition's part of x[b, m] = score(positive b) - score(candidate m of b)
        (B × M, float32; over its dims, plus the linear terms on partition 0). The bag
        sums stay cached under args.key for `adjust`.

        With args.adjust = [earlier keys] and their coefficients after the batch arrays,
        those batches are adjusted first, in order: one message per batch instead of
        two. Such a request changes the model, so send it exactly once (once=True)."""
        earlier = args.get("adjust", ())
        if len(arrays) != 7 + len(earlier):
            raise ShapeError(f"dotprod takes user bags, item bags (3 arrays each), pairs and "
                             f"one coefficient array per key in adjust ({len(earlier)})")
        users, items, pairs = self._batch(arrays[:7])
        for key, c_diff in zip(earlier, arrays[7:]):
            self._adjust(view, key, c_diff)
        factors = view.table("factors").data
        user_sums = kernels.bag_sums(*users, factors)
        item_sums = kernels.bag_sums(*items, factors)
        self._remember((view.part, args["key"]), (users, items, pairs, user_sums, item_sums))
        scores = kernels.pair_scores(user_sums, item_sums, pairs)
        if view.part == 0:
            scores += kernels.bag_linear(*items, view.table("linear").data)[pairs]
        return {}, (scores[:, :1] - scores[:, 1:],)

    @udf(threaded=True)
    def adjust(self, view, args, arrays):
        """Apply the coefficients c[b, m] = d objective / d x[b, m] (B × M) to the cached
        batch args.key: +c on the positive's score, -c on the candidate's."""
        if len(arrays) != 1:
            raise ShapeError("adjust takes one array: the coefficients")
        return {"features": self._adjust(view, args["key"], arrays[0])}

    def _adjust(self, view, key: Any, c_diff: np.ndarray) -> int:
        users, items, pairs, user_sums, item_sums = self._peek((view.part, key))
        if c_diff.shape != (pairs.shape[0], pairs.shape[1] - 1) or c_diff.dtype != np.float32:
            raise ShapeError(f"coefficients of batch {key!r} must be float32 of shape "
                             f"{[pairs.shape[0], pairs.shape[1] - 1]}")
        self._forget((view.part, key))
        d_user, d_item, d_lin, user_on, item_on = kernels.sum_gradients(
            user_sums, item_sums, pairs, c_diff)
        touched = self._step(view, "factors", [(users, d_user, user_on), (items, d_item, item_on)])
        if view.part == 0:
            self._step(view, "linear", [(items, d_lin[:, None], item_on)])
        return touched

    def _step(self, view, table: str, sources: list[tuple[Bags, np.ndarray, np.ndarray]]
              ) -> int:
        """Spread ascent directions of bag sums — (bags, directions, active) per source —
        to the bags' features in `table` and take one optimizer step; returns how many
        features were touched."""
        c = self.config
        adagrad = c["optimizer"] == "adagrad"
        data = view.table(table).data
        acc = view.table(f"{table}_acc").data if adagrad else data
        if data.ndim == 1:  # the linear weights: a column of one
            data, acc = data[:, None], acc[:, None]
        size = sum(bags[1].size for bags, _, _ in sources)
        touched = np.empty(size, np.int64)
        grad = np.empty((size, data.shape[1]), np.float32)
        count = np.empty(size, np.float32)
        slot = self._slots(data.shape[0])
        n = 0
        for bags, directions, active in sources:
            n = kernels.gather_gradients(*bags, directions, active, slot, touched, n, grad, count)
        reg = c["factors_reg"] if table == "factors" else c["linear_reg"]
        kernels.apply_update(data, acc, touched[:n], grad, count, float(c["step_size"]), reg,
                             adagrad, slot)
        return n

    def _slots(self, rows: int) -> np.ndarray:
        """This thread's feature → slot scratch (all -1 between steps), so that a step
        deduplicates its features without sorting them."""
        slot = getattr(self._scratch, "slot", None)
        if slot is None or slot.size < rows:
            slot = self._scratch.slot = np.full(rows, -1, np.int32)
        return slot

    @udf(read=True)
    def cached(self, view, args, arrays):
        """How many dotprod batches this partition holds awaiting their adjust."""
        with self._lock:
            return {"batches": sum(1 for part, _ in self._cache if part == view.part)}

    @udf(threaded=True, read=True)
    def pull_sum(self, view, args, arrays):
        """Sums of bags over this partition's dims (+ their linear terms on partition 0):
        what recommendation and prediction score with."""
        bags = self._bags(arrays, 0, "feature")
        out: tuple[np.ndarray, ...] = (kernels.bag_sums(*bags, view.table("factors").data),)
        if view.part == 0:
            out += (kernels.bag_linear(*bags, view.table("linear").data),)
        return {}, out

    @udf(threaded=True)
    def push_sum(self, view, args, arrays):
        """Spread full-width ascent directions of bag sums (bags × dims) to the bags'
        features, on this partition's dims, with the model's optimizer."""
        bags = self._bags(arrays, 0, "feature")
        d_full = arrays[3]
        if d_full.dtype != np.float32 or d_full.shape != (bags[0].size - 1, self.config["dims"]):
            raise ShapeError("push_sum takes float32 directions of shape (bags, dims)")
        cols = view.table("factors").spec.split().indices(view.part)
        every = np.ones(bags[0].size - 1, np.bool_)
        return {"features": self._step(view, "factors",
                                       [(bags, np.ascontiguousarray(d_full[:, cols]), every)])}
