"""The async client: catalog calls to the master, data calls straight to the shards.

Every table request is split by partition (and, inside a partition, into chunks below the
server's frame limit), the parts are sent concurrently over one reused connection per
server, and the replies are reassembled in request order. A request whose connection
fails or times out is retried with exponential backoff until `retry_deadline`; pushes
and other once-only requests carry a (client id, sequence) tag that stays the same across
retries, so the shard applies each exactly once. After the deadline the caller gets a
typed ConnectionLostError / RequestTimeoutError naming the shard, never a hang.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import numpy as np
from pydantic import SecretStr

from psframework.config import Settings, load_settings, parse_address
from psframework.errors import (
    ConnectionLostError, DTypeError, RequestTimeoutError, ShapeError, UnknownModelError,
)
from psframework.protocol import Message
from psframework.storage import init as initializers
from psframework.storage.table import TableSpec
from psframework.transport import ClientConnection, connect

__all__ = ["AsyncClient", "ModelInfo"]

HEADER_ROOM = 64 * 1024  # bytes kept free in every frame for the header


@dataclass(frozen=True)
class ModelInfo:
    """Where a model lives: its tables and the server of each partition."""

    name: str
    uid: str  # this incarnation of the name; shards refuse requests for another
    type: str
    config: dict
    tables: dict[str, TableSpec]
    placement: tuple[str, ...]
    servers: dict[str, str]

    @classmethod
    def from_wire(cls, d: dict) -> "ModelInfo":
        tables = {t["name"]: TableSpec.from_wire(t) for t in d["tables"]}
        return cls(d["name"], d["uid"], d["type"], d["config"], tables,
                   tuple(d["placement"]), dict(d["servers"]))

    @property
    def parts(self) -> int:
        return len(self.placement)

    def table(self, name: str) -> TableSpec:
        try:
            return self.tables[name]
        except KeyError:
            raise UnknownModelError(f"model {self.name!r} has no table {name!r} "
                                    f"(tables: {sorted(self.tables)})", model=self.name) from None

    def address(self, part: int) -> tuple[str, str]:
        shard = self.placement[part]
        return shard, self.servers[shard]


def _index(idx: Any, length: int, what: str) -> np.ndarray:
    a = np.asarray(idx)
    if a.dtype.kind not in "iu" and a.size:
        raise ShapeError(f"{what} must be integers, got {a.dtype}")
    a = a.astype(np.int64, copy=False).reshape(-1) if a.ndim <= 1 else None
    if a is None:
        raise ShapeError(f"{what} must be a 1-d array of indices")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= length):
        raise ShapeError(f"{what} out of range: valid indices are 0..{length - 1}")
    return a


def _values(values: Any, spec: TableSpec, shape: tuple[int, ...]) -> np.ndarray:
    v = np.asarray(values)
    if not np.can_cast(v.dtype, spec.dtype, casting="same_kind"):
        raise DTypeError(f"cannot push {v.dtype} values into {spec.dtype} table {spec.name!r}; "
                         "cast them first")
    if v.shape != shape:
        raise ShapeError(f"values have shape {list(v.shape)}, expected {list(shape)} for "
                         f"table {spec.name!r}")
    return v.astype(spec.dtype, copy=False)


def _chunks(n: int, bytes_per_item: int, limit: int) -> Iterable[slice]:
    step = max(1, (limit - HEADER_ROOM) // max(1, bytes_per_item))
    return (slice(a, min(a + step, n)) for a in range(0, max(n, 1), step))


def _at(pos: np.ndarray | slice, chunk: slice) -> np.ndarray | slice:
    return chunk if isinstance(pos, slice) else pos[chunk]


class AsyncClient:
    """Async access to a psframework cluster. Use as `async with AsyncClient(addr) as c:`."""

    def __init__(self, master: str, settings: Settings | None = None, *,
                 secret: str | None = None) -> None:
        settings = settings or load_settings()
        if secret is not None:
            settings = settings.model_copy(update={"secret": SecretStr(secret)})
        parse_address(master)
        self.master = master
        self.settings = settings
        self.client_id = os.urandom(8)
        self._seq = itertools.count(1)
        self._conns: dict[str, ClientConnection] = {}
        self._connecting: dict[str, asyncio.Future] = {}
        self._models: dict[str, ModelInfo] = {}

    async def __aenter__(self) -> "AsyncClient":
        await self.ping()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    # -- requests ----------------------------------------------------------------------
    async def _connection(self, address: str) -> ClientConnection:
        conn = self._conns.get(address)
        if conn is not None and conn.is_open:
            return conn
        pending = self._connecting.get(address)
        if pending is None:
            host, port = parse_address(address)
            s = self.settings
            pending = asyncio.ensure_future(connect(host, port, limits=s.limits,
                                                    secret=s.secret_bytes, timeout=s.connect_timeout))
            self._connecting[address] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(address, None))
        conn = await asyncio.shield(pending)
        self._conns[address] = conn
        return conn

    async def _retrying(self, attempt: Callable[[], Awaitable], *, address: str, op: str,
                        model: str = "", shard: str | None = None, retry: bool = True):
        """Run `attempt()`; on connection loss or timeout retry it with exponential backoff
        until the retry deadline, then raise a typed error that says where and what."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.retry_deadline
        delay = 0.02
        while True:
            try:
                return await attempt()
            except (ConnectionLostError, RequestTimeoutError) as e:
                if retry and loop.time() + delay <= deadline:
                    await asyncio.sleep(delay * (1 + random.random() / 2))
                    delay = min(2 * delay, 1.0)
                    continue
                note = (f" (gave up after retrying for {self.settings.retry_deadline:g}s)"
                        if retry else "")
                raise type(e)(e.message + note, model=e.model or model or None, op=e.op or op,
                              shard=e.shard or shard or address) from None

    async def request(self, address: str, op: str, model: str = "", args: dict | None = None,
                      arrays: tuple = (), *, retry: bool = True, shard: str | None = None) -> Message:
        """One request to one server, retried on connection loss or timeout until the
        retry deadline. Give once-only requests a tag with `self.once()` in `args`."""
        async def attempt() -> Message:
            conn = await self._connection(address)
            return await conn.request(op, model, args, arrays,
                                      timeout=self.settings.request_timeout)
        return await self._retrying(attempt, address=address, op=op, model=model, shard=shard,
                                    retry=retry)

    def once(self) -> list:
        """A fresh exactly-once tag: put it in a request's args as `once`."""
        return [self.client_id, next(self._seq)]

    async def _master(self, op: str, model: str = "", args: dict | None = None, *,
                      once: bool = False) -> dict:
        """A request to the master; `once` for catalog changes, so a resend after a lost
        reply (create, destroy, save, load) answers as the first did instead of failing."""
        args = {**(args or {}), "once": self.once()} if once else args
        return (await self.request(self.master, op, model, args, shard="master")).args

    async def _limit(self, info: ModelInfo, part: int, op: str) -> int:
        """How many bytes one request to partition `part` may carry: the chunk size, or
        less if either end of the connection accepts less."""
        shard, address = info.address(part)
        conn = self._conns.get(address)
        if conn is None or not conn.is_open:
            conn = await self._retrying(lambda: self._connection(address), address=address,
                                        op=op, model=info.name, shard=shard)
        return min(conn.peer_limits.max_frame_bytes, self.settings.chunk_bytes + HEADER_ROOM)

    # -- catalog -----------------------------------------------------------------------
    async def ping(self) -> None:
        await self._master("ping")

    async def status(self) -> dict:
        """Servers (alive, memory, ops served) and models (tables, placement)."""
        return await self._master("status")

    async def create_model(self, name: str, type: str, config: dict | None = None, *,
                           exists_ok: bool = False) -> ModelInfo:
        """Create a model of an installed plugin type; its tables are allocated on the shards."""
        info = ModelInfo.from_wire(await self._master(
            "create_model", name, {"type": type, "config": config or {}, "exists_ok": exists_ok},
            once=True))
        self._models[name] = info
        return info

    async def model(self, name: str, *, refresh: bool = False) -> ModelInfo:
        if refresh or name not in self._models:
            self._models[name] = ModelInfo.from_wire(await self._master("lookup", name))
        return self._models[name]

    async def destroy(self, name: str) -> bool:
        self._models.pop(name, None)
        return bool((await self._master("destroy", name, once=True))["destroyed"])

    async def save(self, name: str, path: str | os.PathLike) -> str:
        """Save every partition of model `name` under directory `path` (reachable by the
        shards and the master), plus its metadata; returns the absolute directory."""
        return (await self._master("save", name, {"path": str(Path(path).absolute())},
                                   once=True))["path"]

    async def load(self, path: str | os.PathLike, name: str | None = None) -> ModelInfo:
        """Load a saved model (under its saved name, or `name`)."""
        info = ModelInfo.from_wire(await self._master(
            "load", name or "", {"path": str(Path(path).absolute())}, once=True))
        self._models[info.name] = info
        return info

    async def create_matrix(self, name: str, rows: int, cols: int, dtype: str = "float32", *,
                            partition_by: str = "rows", partitioner: str = "range",
                            parts: int = 0, init: dict | None = None, aggregate: str = "add",
                            exists_ok: bool = False):
        """A dense rows × cols matrix as model `name` (built-in type `tables`)."""
        spec = TableSpec("values", (rows, cols), dtype, partition_by, partitioner, parts,
                         init or initializers.zeros(), aggregate).validate()
        await self.create_model(name, "tables", {"tables": [spec.to_wire()]}, exists_ok=exists_ok)
        return await self.matrix(name)

    async def create_vector(self, name: str, size: int, dtype: str = "float32", *,
                            partitioner: str = "range", parts: int = 0, init: dict | None = None,
                            aggregate: str = "add", exists_ok: bool = False):
        """A dense vector as model `name` (built-in type `tables`)."""
        spec = TableSpec("values", (size,), dtype, "rows", partitioner, parts,
                         init or initializers.zeros(), aggregate).validate()
        await self.create_model(name, "tables", {"tables": [spec.to_wire()]}, exists_ok=exists_ok)
        return await self.vector(name)

    async def matrix(self, model: str, table: str = "values"):
        """A picklable handle on an existing matrix table."""
        from psframework.client.handles import BigMatrix
        spec = (await self.model(model)).table(table)
        if spec.is_vector:
            raise ShapeError(f"table {table!r} of {model!r} is a vector; use vector()", model=model)
        return BigMatrix(self.master, model, table, spec.shape, spec.dtype)

    async def vector(self, model: str, table: str = "values"):
        """A picklable handle on an existing vector table."""
        from psframework.client.handles import BigVector
        spec = (await self.model(model)).table(table)
        if not spec.is_vector:
            raise ShapeError(f"table {table!r} of {model!r} is a matrix; use matrix()", model=model)
        return BigVector(self.master, model, table, spec.shape, spec.dtype)

    # -- data --------------------------------------------------------------------------
    async def _scatter(self, info: ModelInfo, jobs: list[tuple[int, str, dict, tuple, Callable]]):
        """Send (part, op, args, arrays, on_reply) jobs concurrently."""
        async def one(part, op, args, arrays, on_reply):
            shard, address = info.address(part)
            try:
                reply = await self.request(address, op, info.name,
                                           {**args, "part": part, "uid": info.uid}, arrays,
                                           shard=shard)
            except UnknownModelError:
                # the model was destroyed, re-created or loaded elsewhere since we looked it
                # up: forget the placement, so the next call asks the master again
                self._models.pop(info.name, None)
                raise
            on_reply(reply)
        if len(jobs) == 1:
            await one(*jobs[0])
        else:
            await asyncio.gather(*(one(*job) for job in jobs))

    async def _row_plan(self, info: ModelInfo, spec: TableSpec, rows: np.ndarray, op: str
                        ) -> list[tuple[int, np.ndarray, Any]]:
        """How a row-wise op on `rows` splits into requests: (partition, indices to send,
        where the part sits in the whole request). A row partition gets its own rows; a
        column partition gets every row, and its part is a block of columns. Each request
        stays below the frame limit."""
        item = np.dtype(spec.dtype).itemsize
        split = spec.split()
        plan = []
        if spec.axis == 0:
            for part, pos, local in split.split(rows):
                limit = await self._limit(info, part, op)
                for c in _chunks(local.size, 8 + item * spec.cols, limit):
                    plan.append((part, local[c], _at(pos, c)))
        else:
            for part in range(spec.parts):
                limit = await self._limit(info, part, op)
                for c in _chunks(rows.size, 8 + item * split.size(part), limit):
                    plan.append((part, rows[c], (c, split.indices(part))))
        return plan

    async def pull_rows(self, model: str, table: str, rows: Any) -> np.ndarray:
        """Rows of a matrix (or elements of a vector), in the order asked."""
        info = await self.model(model)
        spec = info.table(table)
        rows = _index(rows, spec.shape[0], "rows")
        out = np.empty((rows.size,) + spec.shape[1:], dtype=spec.dtype)
        plan = await self._row_plan(info, spec, rows, "pull_rows")
        await self._scatter(info, [
            (part, "pull_rows", {"table": table}, (idx,),
             lambda r, at=at: out.__setitem__(at, r.arrays[0])) for part, idx, at in plan])
        return out

    async def _elem_plan(self, info: ModelInfo, spec: TableSpec, rows: Any, cols: Any,
                         op: str) -> tuple[int, list[tuple[int, tuple, Any]]]:
        """How an element op on (rows[i], cols[i]) splits into requests: the number of
        elements, and per request (partition, (local rows, cols) or (rows, local cols),
        where the part sits in the whole request)."""
        rows = _index(rows, spec.shape[0], "rows")
        cols = _index(cols, spec.shape[1], "cols")
        if rows.shape != cols.shape:
            raise ShapeError("rows and cols must have the same length", model=info.name)
        key, other = (rows, cols) if spec.axis == 0 else (cols, rows)
        plan = []
        for part, pos, local in spec.split().split(key):
            limit = await self._limit(info, part, op)
            for c in _chunks(local.size, 16 + np.dtype(spec.dtype).itemsize, limit):
                at = _at(pos, c)
                pair = (local[c], other[at]) if spec.axis == 0 else (other[at], local[c])
                plan.append((part, pair, at))
        return rows.size, plan

    async def pull(self, model: str, table: str, rows: Any, cols: Any = None) -> np.ndarray:
        """Elements (rows[i], cols[i]) of a matrix, or (rows[i]) of a vector."""
        info = await self.model(model)
        spec = info.table(table)
        if spec.is_vector:
            return await self.pull_rows(model, table, rows)
        n, plan = await self._elem_plan(info, spec, rows, cols, "pull_elems")
        out = np.empty(n, dtype=spec.dtype)
        await self._scatter(info, [
            (part, "pull_elems", {"table": table}, pair,
             lambda r, at=at: out.__setitem__(at, r.arrays[0])) for part, pair, at in plan])
        return out

    async def push_rows(self, model: str, table: str, rows: Any, values: Any) -> None:
        """Combine `values[i]` into row `rows[i]` with the table's aggregator, exactly once."""
        info = await self.model(model)
        spec = info.table(table)
        rows = _index(rows, spec.shape[0], "rows")
        values = _values(values, spec, (rows.size,) + spec.shape[1:])
        plan = await self._row_plan(info, spec, rows, "push_rows")
        await self._scatter(info, [
            (part, "push_rows", {"table": table, "once": self.once()}, (idx, values[at]), _ignore)
            for part, idx, at in plan])

    async def push(self, model: str, table: str, rows: Any, cols: Any = None,
                   values: Any = None) -> None:
        """Combine `values[i]` into element (rows[i], cols[i]) (vector: rows[i]), exactly once."""
        info = await self.model(model)
        spec = info.table(table)
        if spec.is_vector:
            if values is None:
                values, cols = cols, None
            return await self.push_rows(model, table, rows, values)
        n, plan = await self._elem_plan(info, spec, rows, cols, "push_elems")
        values = _values(values, spec, (n,))
        await self._scatter(info, [
            (part, "push_elems", {"table": table, "once": self.once()}, pair + (values[at],),
             _ignore) for part, pair, at in plan])

    async def call(self, model: str, op: str, args: dict | None = None, arrays: tuple = (), *,
                   parts: Iterable[int] | None = None, once: bool = False
                   ) -> list[tuple[dict, tuple[np.ndarray, ...]]]:
        """Run a model's server op (UDF) on partitions `parts` (default: all), concurrently.
        Returns each partition's reply `(args, arrays)` in the order of `parts`. With
        `once=True` each partition applies the call exactly once, even across retries."""
        info = await self.model(model)
        parts = list(range(info.parts) if parts is None else parts)
        for p in parts:
            if not 0 <= p < info.parts:
                raise ShapeError(f"partition {p} out of range: model {model!r} has {info.parts}",
                                 model=model, op=op)
        replies: list = [None] * len(parts)
        jobs = []
        for i, p in enumerate(parts):
            a = {**(args or {}), **({"once": self.once()} if once else {})}
            jobs.append((p, op, a, tuple(arrays),
                         lambda r, i=i: replies.__setitem__(i, (r.args, r.arrays))))
        await self._scatter(info, jobs)
        return replies


def _ignore(reply: Message) -> None:
    pass
