"""The async client: catalog calls to the master, data calls straight to the shards.

Every table request is split by partition (and, inside a partition, into chunks below the
server's frame limit), the parts are sent concurrently over one reused connection per
server — at most `WINDOW_CHUNKS` chunks' worth of bytes in flight per connection, so a
huge request streams instead of queueing hundreds of frames whose timeouts all run at
once — and the replies are reassembled in request order.

A request whose connection fails or times out is retried with exponential backoff until
`retry_deadline`, if resending it is safe: reads are, and so are pushes and other
once-only requests, which carry a tag (see transport.once) that stays the same across
retries, so the server applies each exactly once. A request that is neither (a UDF call
without `once` or `idempotent`) is resent only if it never left this process. After the
deadline the caller gets a typed ConnectionLostError / RequestTimeoutError naming the
shard and saying whether the request may have been applied, never a hang.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import numpy as np
from pydantic import SecretStr

from psframework.config import Settings, load_settings, parse_address
from psframework.errors import (
    ConnectionLostError, MovedError, RequestTimeoutError, ShapeError, UnknownModelError,
)
from psframework.protocol import Message
from psframework.storage import init as initializers
from psframework.storage.table import TableSpec
from psframework.client import checks, plan
from psframework.client.flow import Tags, Window
from psframework.client.model_info import ModelInfo
from psframework.transport import ClientConnection, NotSent, connect

__all__ = ["AsyncClient", "ModelInfo", "Moved"]

WINDOW_CHUNKS = 4  # bytes in flight per connection: this many chunk_bytes (one at least)

T = TypeVar("T")


class Moved(Exception):
    """A request's partition failed over to another shard: resend it there."""

    def __init__(self, info: ModelInfo) -> None:
        super().__init__(info.name)
        self.info = info


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
        self._tls = settings.client_tls()
        self._tags: dict[str, Tags] = {}  # per server address
        self._windows: dict[str, Window] = {}
        self._conns: dict[str, ClientConnection] = {}
        self._connecting: dict[str, asyncio.Future[ClientConnection]] = {}
        self._models: dict[str, ModelInfo] = {}
        self._refreshing: dict[str, asyncio.Future[ModelInfo]] = {}

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
    def _open(self, address: str) -> ClientConnection | None:
        """This client's connection to `address` if it is open (no await), else None."""
        conn = self._conns.get(address)
        return conn if conn is not None and conn.is_open else None

    async def _connection(self, address: str) -> ClientConnection:
        open_conn = self._open(address)
        if open_conn is not None:
            return open_conn
        pending = self._connecting.get(address)
        if pending is None:
            host, port = parse_address(address)
            s = self.settings
            pending = asyncio.ensure_future(connect(host, port, limits=s.limits,
                                                    secret=s.secret_bytes, timeout=s.connect_timeout,
                                                    ssl_context=self._tls))
            self._connecting[address] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(address, None))
        try:
            conn = await asyncio.shield(pending)
        except (ConnectionLostError, RequestTimeoutError) as e:  # nothing was sent yet
            raise NotSent(e.message, shard=e.shard) from None
        self._conns[address] = conn
        return conn

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], *, address: str, op: str,
                        model: str = "", shard: str | None = None, retry: bool = True,
                        once: bool = False,
                        moved: Callable[[], Awaitable[ModelInfo | None]] | None = None) -> T:
        """Run `attempt()`; on connection loss or timeout retry it with exponential backoff
        until the retry deadline — if resending is safe (`retry`: harmless; `once`: tagged)
        or it was never sent — then raise a typed error that says where, what, and whether
        it may have been applied. Before each retry, `moved()` may say that the target
        moved (a failover): it raises `Moved` then, for the caller to resend there."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.retry_deadline
        delay = 0.02
        while True:
            try:
                return await attempt()
            except (ConnectionLostError, RequestTimeoutError) as e:
                # NotSent never left; an error a server sent was not applied there
                definite = isinstance(e, NotSent) or e.from_server
                resend = retry or once or definite
                if resend and moved is not None:
                    where = await moved()
                    if where is not None:
                        raise Moved(where) from None
                if resend and loop.time() + delay <= deadline:
                    await asyncio.sleep(delay * (1 + random.random() / 2))
                    delay = min(2 * delay, 1.0)
                    continue
                note = ""
                if not definite and once:
                    note = "; whether the server applied it is unknown"
                elif not resend:
                    note = ("; it may or may not have run on the server (call ops that "
                            "change state with once=True, so that they can be retried)")
                if resend:
                    note = f" (gave up after retrying for {self.settings.retry_deadline:g}s)" + note
                cls = ConnectionLostError if isinstance(e, NotSent) else type(e)
                raise cls(e.message + note, model=e.model or model or None, op=e.op or op,
                          shard=e.shard or shard or address) from None

    async def request(self, address: str, op: str, model: str = "", args: dict | None = None,
                      arrays: tuple = (), *, once: bool = False, retry: bool = True,
                      shard: str | None = None, weight: int = 0,
                      tag: tuple[Tags, int] | None = None,
                      moved: Callable[[], Awaitable[ModelInfo | None]] | None = None,
                      into: np.ndarray | None = None) -> Message:
        """One request to one server. `once=True` tags it, so the server applies it
        exactly once and it is retried on connection loss or timeout until the retry
        deadline; `retry=True` (the default) says that resending it is harmless anyway (a
        read); with neither it is resent only if it was never sent. `weight`: the bytes it
        and its reply hold in flight, for the connection's window. `tag`: the exactly-once
        tag of a request resent to a new server after a failover (the caller finishes it);
        `moved`: see _retrying; `into`: see ClientConnection.start."""
        tags: Tags | None
        if tag is not None:
            tags, seq = tag
        else:
            tags = self._tags.setdefault(address, Tags()) if once else None
            seq = tags.new() if tags is not None else 0

        async def attempt() -> Message:
            conn = self._open(address) or await self._connection(address)
            a = {**(args or {}), "once": tags.tag(seq)} if tags is not None else args
            window = self._windows.get(address)
            if window is None:
                window = self._windows[address] = Window(WINDOW_CHUNKS * self.settings.chunk_bytes)
            return await window(weight, lambda: conn.request(
                op, model, a, arrays, timeout=self.settings.request_timeout, into=into))
        try:
            return await self._retrying(attempt, address=address, op=op, model=model,
                                        shard=shard, retry=retry, once=once, moved=moved)
        finally:
            if tags is not None and tag is None:
                tags.finish(seq)

    async def _master(self, op: str, model: str = "", args: dict | None = None, *,
                      once: bool = False) -> dict[str, Any]:
        """A request to the master; `once` for catalog changes, so a resend after a lost
        reply (create, destroy, save, load) answers as the first did instead of failing."""
        return (await self.request(self.master, op, model, args, once=once, shard="master")).args

    async def _limit(self, info: ModelInfo, part: int) -> int:
        """How many bytes one request to partition `part` may carry: the chunk size, or
        less if either end of the connection accepts less (a server that cannot be reached
        now is assumed to take what this client takes: the requests find out). Connects
        first; `_limit_now` is the answer without an await once connected."""
        try:
            return self._frame_limit(await self._connection(info.address(part)[1]))
        except NotSent:
            return min(self.settings.limits.max_frame_bytes,
                       self.settings.chunk_bytes + plan.HEADER_ROOM)

    def _limit_now(self, info: ModelInfo, part: int) -> int | None:
        """`_limit` when the connection is open already (the usual case), else None."""
        conn = self._open(info.address(part)[1])
        return self._frame_limit(conn) if conn is not None else None

    def _frame_limit(self, conn: ClientConnection) -> int:
        return min(conn.peer_limits.max_frame_bytes, self.settings.chunk_bytes + plan.HEADER_ROOM)

    # -- catalog -----------------------------------------------------------------------
    async def ping(self) -> None:
        await self._master("ping")

    async def status(self) -> dict:
        """Servers (alive, memory, ops served) and models (tables, placement)."""
        return await self._master("status")

    async def create_model(self, name: str, type: str, config: dict | None = None, *,
                           exists_ok: bool = False, replicas: int | None = None,
                           checkpoint_interval: float | None = None) -> ModelInfo:
        """Create a model of an installed plugin type; its tables are allocated on the shards.
        `replicas`: copies of each partition (default: the master's `replicas` setting; 2
        survives the loss of any one shard with no acknowledged push lost);
        `checkpoint_interval`: seconds between this model's checkpoints (default: the
        master's setting; needs the master's checkpoint_dir)."""
        args: dict[str, Any] = {"type": type, "config": config or {}, "exists_ok": exists_ok}
        if replicas is not None:
            args["replicas"] = replicas
        if checkpoint_interval is not None:
            args["checkpoint_interval"] = checkpoint_interval
        info = ModelInfo.from_wire(await self._master("create_model", name, args, once=True))
        self._models[name] = info
        return info

    def _known(self, name: str) -> ModelInfo | None:
        """Model `name`'s lookup if this client has a usable one (no await), else None."""
        known = self._models.get(name)
        return known if known is not None and not known.lost else None

    async def model(self, name: str, *, refresh: bool = False) -> ModelInfo:
        if refresh or self._known(name) is None:  # a lost partition may be back
            self._models[name] = ModelInfo.from_wire(await self._master("lookup", name))
        return self._models[name]

    async def _refresh(self, name: str) -> ModelInfo:
        """Look model `name` up again; concurrent callers share one lookup."""
        pending = self._refreshing.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self.model(name, refresh=True))
            self._refreshing[name] = pending
            pending.add_done_callback(lambda _: self._refreshing.pop(name, None))
        return await asyncio.shield(pending)

    async def _moved(self, info: ModelInfo, part: int) -> ModelInfo | None:
        """The model's lookup now, if partition `part` of it has moved since `info` (its
        primary died and another copy took over); None if it has not (yet)."""
        try:
            fresh = await self._refresh(info.name)
        except (ConnectionLostError, RequestTimeoutError):
            return None  # the master is away too: retry where we were
        if fresh.uid == info.uid and fresh.address(part) != info.address(part):
            return fresh
        return None

    async def destroy(self, name: str) -> bool:
        self._models.pop(name, None)
        return bool((await self._master("destroy", name, once=True))["destroyed"])

    async def save(self, name: str, path: str | os.PathLike) -> str:
        """Save every partition of model `name` under directory `path` (reachable by the
        shards and the master), plus its manifest; returns the absolute directory. The
        save replaces an earlier one there as a whole, or — if it fails — not at all."""
        return (await self._master("save", name, {"path": checks.directory(path)}, once=True))["path"]

    async def checkpoint(self, name: str) -> dict:
        """Checkpoint model `name` now, under the master's checkpoint_dir: each partition a
        consistent snapshot (its writes held only while it is copied), published as a
        whole; returns where, and the longest hold ("pause", seconds). If a shard dies
        and a partition has no backup, it is restored from the latest checkpoint."""
        return await self._master("checkpoint", name, once=True)

    async def load(self, path: str | os.PathLike, name: str | None = None, *,
                   replicas: int | None = None) -> ModelInfo:
        """Load a saved model (or a checkpoint) under its saved name, or `name`, after
        checking every file against the save's manifest (StorageError names what is
        wrong); `replicas` as for create_model."""
        args: dict[str, Any] = {"path": checks.directory(path)}
        if replicas is not None:
            args["replicas"] = replicas
        info = ModelInfo.from_wire(await self._master("load", name or "", args, once=True))
        self._models[info.name] = info
        return info

    async def create_matrix(self, name: str, rows: int, cols: int, dtype: str = "float32", *,
                            partition_by: str = "rows", partitioner: str = "range",
                            parts: int = 0, init: dict | None = None, aggregate: str = "add",
                            allow_nonfinite: bool = False, exists_ok: bool = False,
                            replicas: int | None = None) -> TableSpec:
        """A dense rows × cols matrix as model `name` (built-in type `tables`), with its one
        table `values`; returns that table's spec. Pushes of NaN or ±inf are refused unless
        `allow_nonfinite`."""
        spec = TableSpec("values", (rows, cols), dtype, partition_by, partitioner, parts,
                         init or initializers.zeros(), aggregate, allow_nonfinite).validate()
        await self.create_model(name, "tables", {"tables": [spec.to_wire()]}, exists_ok=exists_ok,
                                replicas=replicas)
        return await self.matrix(name)

    async def create_vector(self, name: str, size: int, dtype: str = "float32", *,
                            partitioner: str = "range", parts: int = 0, init: dict | None = None,
                            aggregate: str = "add", allow_nonfinite: bool = False,
                            exists_ok: bool = False, replicas: int | None = None) -> TableSpec:
        """A dense vector as model `name` (built-in type `tables`); returns its spec."""
        spec = TableSpec("values", (size,), dtype, "rows", partitioner, parts,
                         init or initializers.zeros(), aggregate, allow_nonfinite).validate()
        await self.create_model(name, "tables", {"tables": [spec.to_wire()]}, exists_ok=exists_ok,
                                replicas=replicas)
        return await self.vector(name)

    async def matrix(self, model: str, table: str = "values") -> TableSpec:
        """The spec of an existing matrix table (ShapeError if it is a vector). The
        synchronous Client's `matrix` makes a BigMatrix handle of it."""
        spec = (await self.model(model)).table(table)
        if spec.is_vector:
            raise ShapeError(f"table {table!r} of {model!r} is a vector; use vector()", model=model)
        return spec

    async def vector(self, model: str, table: str = "values") -> TableSpec:
        """The spec of an existing vector table (ShapeError if it is a matrix). The
        synchronous Client's `vector` makes a BigVector handle of it."""
        spec = (await self.model(model)).table(table)
        if not spec.is_vector:
            raise ShapeError(f"table {table!r} of {model!r} is a matrix; use matrix()", model=model)
        return spec

    # -- data --------------------------------------------------------------------------
    async def _scatter(self, info: ModelInfo, jobs: list[plan.Job], *, once: bool = False,
                       retry: bool = True) -> None:
        """Send the jobs concurrently; on the first failure cancel the others and raise."""
        async def one(job: plan.Job) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.retry_deadline
            delay = 0.02
            at = info  # where the partition is
            tag: tuple[Tags, int] | None = None  # the request's exactly-once tag
            weight = sum(a.nbytes for a in job.arrays) + job.reply_bytes
            try:
                while True:
                    shard, address = at.address(job.part)
                    if once and tag is None:  # one tag wherever the request goes
                        tags = self._tags.setdefault(address, Tags())
                        tag = (tags, tags.new())
                    try:
                        reply = await self.request(
                            address, job.op, info.name,
                            {**job.args, "part": job.part, "uid": info.uid}, job.arrays,
                            once=once, retry=retry, shard=shard, weight=weight, tag=tag,
                            moved=functools.partial(self._moved, at, job.part), into=job.into)
                        break
                    except Moved as m:
                        at = m.info  # failed over: resend to the new primary
                    except MovedError:
                        # not on that shard (any more): the partition moved, or the shard's
                        # lease ran out (it lost the master): look again, resend
                        fresh = await self._refresh(info.name)
                        if fresh.uid != info.uid or loop.time() + delay > deadline:
                            self._models.pop(info.name, None)
                            raise
                        await asyncio.sleep(delay)
                        delay = min(2 * delay, 0.5)
                        at = fresh
                    except UnknownModelError:
                        # destroyed, re-created or loaded elsewhere since we looked it up:
                        # forget the placement, so the next call asks the master again
                        self._models.pop(info.name, None)
                        raise
            finally:
                if tag is not None:
                    tag[0].finish(tag[1])
            job.on_reply(reply)
        if len(jobs) == 1:
            return await one(jobs[0])
        tasks = [asyncio.ensure_future(one(job)) for job in jobs]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
        for t in tasks:  # the first failure in request order
            if t.done() and not t.cancelled():
                failure = t.exception()
                if failure is not None:
                    raise failure

    async def _row_plan(self, info: ModelInfo, spec: TableSpec, rows: np.ndarray
                        ) -> list[tuple[int, np.ndarray, Any]]:
        """How a row-wise op on `rows` splits into requests: (partition, indices to send,
        where the part sits in the whole request). A row partition gets its own rows; a
        column partition gets every row, and its part is a block of columns. Each request
        stays below the frame limit."""
        split = spec.split()
        pieces: list[tuple[int, np.ndarray, Any]] = []
        if spec.axis == 0:
            for part, pos, local in split.split(rows):
                limit = self._limit_now(info, part) or await self._limit(info, part)
                for c in plan.chunks(local.size, 8 + spec.row_bytes(part), limit):
                    pieces.append((part, local[c], plan.at(pos, c)))
        else:
            for part in range(spec.parts):
                limit = self._limit_now(info, part) or await self._limit(info, part)
                for c in plan.chunks(rows.size, 8 + spec.row_bytes(part), limit):
                    pieces.append((part, rows[c], (c, split.indices(part))))
        return pieces

    async def pull_rows(self, model: str, table: str, rows: Any) -> np.ndarray:
        """Rows of a matrix (or elements of a vector), in the order asked."""
        info = self._known(model) or await self.model(model)
        spec = info.table(table)
        rows = checks.indices(rows, spec.shape[0], "rows")
        out = np.empty((rows.size,) + spec.shape[1:], dtype=spec.dtype)
        pieces = await self._row_plan(info, spec, rows)
        jobs = []
        for part, idx, at in pieces:
            into = plan.block(out, at)  # the reply may be read straight into its place
            jobs.append(plan.Job(part, "pull_rows", {"table": table}, (idx,),
                                 plan.filler(out, at, into), idx.size * spec.row_bytes(part),
                                 into))
        await self._scatter(info, jobs)
        return out

    async def _elem_plan(self, info: ModelInfo, spec: TableSpec, rows: Any, cols: Any
                         ) -> tuple[int, list[tuple[int, tuple, Any]]]:
        """How an element op on (rows[i], cols[i]) splits into requests: the number of
        elements, and per request (partition, (local rows, cols) or (rows, local cols),
        where the part sits in the whole request)."""
        rows = checks.indices(rows, spec.shape[0], "rows")
        cols = checks.indices(cols, spec.shape[1], "cols")
        if rows.shape != cols.shape:
            raise ShapeError("rows and cols must have the same length", model=info.name)
        key, other = (rows, cols) if spec.axis == 0 else (cols, rows)
        pieces: list[tuple[int, tuple, Any]] = []
        for part, pos, local in spec.split().split(key):
            limit = self._limit_now(info, part) or await self._limit(info, part)
            for c in plan.chunks(local.size, 16 + np.dtype(spec.dtype).itemsize, limit):
                at = plan.at(pos, c)
                pair = (local[c], other[at]) if spec.axis == 0 else (other[at], local[c])
                pieces.append((part, pair, at))
        return rows.size, pieces

    async def pull(self, model: str, table: str, rows: Any, cols: Any = None) -> np.ndarray:
        """Elements (rows[i], cols[i]) of a matrix, or (rows[i]) of a vector."""
        info = self._known(model) or await self.model(model)
        spec = info.table(table)
        if spec.is_vector:
            return await self.pull_rows(model, table, rows)
        n, pieces = await self._elem_plan(info, spec, rows, cols)
        out = np.empty(n, dtype=spec.dtype)
        await self._scatter(info, [
            plan.Job(part, "pull_elems", {"table": table}, pair, plan.filler(out, at),
                     pair[0].size * out.itemsize)
            for part, pair, at in pieces])
        return out

    async def push_rows(self, model: str, table: str, rows: Any, values: Any) -> None:
        """Combine `values[i]` into row `rows[i]` with the table's aggregator, exactly once."""
        info = self._known(model) or await self.model(model)
        spec = info.table(table)
        rows = checks.indices(rows, spec.shape[0], "rows")
        values = checks.values(values, spec, (rows.size,) + spec.shape[1:])
        pieces = await self._row_plan(info, spec, rows)
        await self._scatter(info, [plan.Job(part, "push_rows", {"table": table}, (idx, values[at]))
                                   for part, idx, at in pieces], once=True)

    async def push(self, model: str, table: str, rows: Any, cols: Any = None,
                   values: Any = None) -> None:
        """Combine `values[i]` into element (rows[i], cols[i]) (vector: rows[i]), exactly once."""
        info = self._known(model) or await self.model(model)
        spec = info.table(table)
        if spec.is_vector:
            if values is None:
                values, cols = cols, None
            return await self.push_rows(model, table, rows, values)
        n, pieces = await self._elem_plan(info, spec, rows, cols)
        values = checks.values(values, spec, (n,))
        await self._scatter(info, [plan.Job(part, "push_elems", {"table": table}, pair + (values[at],))
                                   for part, pair, at in pieces], once=True)

    async def call(self, model: str, op: str, args: dict | None = None, arrays: tuple = (), *,
                   parts: Iterable[int] | None = None, once: bool = False,
                   idempotent: bool = False) -> list[tuple[dict, tuple[np.ndarray, ...]]]:
        """Run a model's server op (UDF) on partitions `parts` (default: all), concurrently.
        Returns each partition's reply `(args, arrays)` in the order of `parts`.

        A call that fails on a lost connection or a timeout is retried only when that is
        safe: with `once=True` each partition applies it exactly once, even across
        retries (use it for every op that changes state); `idempotent=True` says the op
        may run twice harmlessly (a read). Otherwise a call whose request left this
        process is not resent, and the error says it may or may not have run."""
        info = self._known(model) or await self.model(model)
        parts = list(range(info.parts) if parts is None else parts)
        for p in parts:
            if not 0 <= p < info.parts:
                raise ShapeError(f"partition {p} out of range: model {model!r} has {info.parts}",
                                 model=model, op=op)
        replies: list[Any] = [None] * len(parts)
        jobs = [plan.Job(p, op, dict(args or {}), tuple(arrays), plan.keeper(replies, i))
                for i, p in enumerate(parts)]
        await self._scatter(info, jobs, once=once, retry=idempotent)
        return replies

    async def report(self, model: str, **values: float) -> None:
        """Publish training gauges of `model`, e.g. `report("m", loss=0.31,
        pairs_per_s=1.2e6)`: the master keeps the latest value of each name (at most 64
        per model) until the model is destroyed, shows them in `psframework status` and
        exports them as the Prometheus gauge psframework_training{model, name}. Names are
        1-64 letters, digits or _.:-; values finite numbers (else ConfigError)."""
        await self._master("report", model, {"values": values})
