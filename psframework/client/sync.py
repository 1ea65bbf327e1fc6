"""The synchronous client: the async client on an event loop that the calling threads
drive themselves, for plain synchronous code such as Spark tasks. A call runs the loop in
the caller's thread until its own result is in — no hand-off to another thread, whose
two wake-ups cost more than the rest of a small request. Thread-safe: many threads may
call one Client at once and their requests share its connections; one of them drives the
loop (for everyone's requests) while the others wait for their results or their turn.
Called from a thread that runs an event loop already, a call drives the client's loop from
a helper thread instead.

`get_client(master)` returns this process's client for a master: the first Client made
for that master in this process (explicitly, or by get_client itself from PSF_* settings)
until it is closed; a later one does not replace it, and a forked child starts with none.

The handles (`BigMatrix`, `BigVector`) are part of this facade: small picklable
descriptions of a table whose methods go through `get_client`, so a handle shipped to an
executor reconnects lazily there. The async client knows nothing of them (its `matrix`
and `vector` return the table's spec).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Coroutine, Iterable, Iterator, TypeVar

import numpy as np

from psframework.client.core import AsyncClient
from psframework.client.model_info import ModelInfo
from psframework.config import Settings
from psframework.transport import new_event_loop

__all__ = ["Client", "get_client", "BigMatrix", "BigVector"]

T = TypeVar("T")

_registry: dict[str, "Client"] = {}
_registry_lock = threading.Lock()
_registry_pid = os.getpid()


class Client:
    """Blocking access to a cluster: AsyncClient's methods without `await`, except that
    tables come as BigMatrix / BigVector handles."""

    def __init__(self, master: str, settings: Settings | None = None, *,
                 secret: str | None = None) -> None:
        self.aio = AsyncClient(master, settings, secret=secret)
        self.master = master
        self._loop = new_event_loop()
        self._driving = threading.Lock()  # held by the thread that runs the loop now
        self._turns = threading.Condition()  # a result came in, or the loop is free
        self.closed = False
        with _registry_lock:
            _forget_after_fork()
            _registry.setdefault(master, self)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop and wait for its result."""
        if self.closed:
            coro.close()
            raise RuntimeError("this psframework Client is closed")
        plain = asyncio._get_running_loop() is None  # not inside a running event loop
        if plain:
            with self._driver() as mine:
                if mine:  # the loop is free: run it here, for this coroutine (and others')
                    return self._loop.run_until_complete(coro)
        result = asyncio.run_coroutine_threadsafe(coro, self._loop)
        result.add_done_callback(self._wake)
        if plain:  # it may drive in turn
            return self._wait(result)
        helper = concurrent.futures.ThreadPoolExecutor(1, "psframework-client")
        with helper:  # this thread's own loop may not be blocked by ours: a helper drives
            return helper.submit(self._wait, result).result()

    def _wait(self, result: concurrent.futures.Future[T]) -> T:
        """Drive the loop until `result` is in, or wait while another thread drives it."""
        while not result.done():
            with self._driver() as mine:
                if mine and not result.done():
                    self._loop.run_until_complete(asyncio.wrap_future(result, loop=self._loop))
            if not mine:
                with self._turns:
                    self._turns.wait_for(lambda: result.done() or not self._driving.locked())
        return result.result()

    @contextlib.contextmanager
    def _driver(self) -> Iterator[bool]:
        """Whether this thread may run the loop now (no other thread runs it); when it
        is done, a waiting thread may take the loop over."""
        if not self._driving.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            self._driving.release()
            self._wake()

    def _wake(self, *_: object) -> None:
        with self._turns:
            self._turns.notify_all()

    def close(self) -> None:
        if self.closed:
            return
        self.run(self.aio.close())
        self.closed = True
        with self._driving:
            self._loop.run_until_complete(asyncio.sleep(0))  # the transports finish closing
            self._loop.close()
        with _registry_lock:
            if _registry.get(self.master) is self:
                del _registry[self.master]

    def __enter__(self) -> "Client":
        self.ping()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.master!r})"

    # -- catalog (see AsyncClient for the details of each) -----------------------------
    def ping(self) -> None:
        self.run(self.aio.ping())

    def status(self) -> dict:
        """Servers (alive, memory, ops served) and models (tables, placement)."""
        return self.run(self.aio.status())

    def create_model(self, name: str, type: str, config: dict | None = None, *,
                     exists_ok: bool = False, replicas: int | None = None,
                     checkpoint_interval: float | None = None) -> ModelInfo:
        """Create a model of an installed plugin type; its tables are allocated on the
        shards. See AsyncClient.create_model."""
        return self.run(self.aio.create_model(name, type, config, exists_ok=exists_ok,
                                              replicas=replicas,
                                              checkpoint_interval=checkpoint_interval))

    def model(self, name: str, *, refresh: bool = False) -> ModelInfo:
        """Model `name`'s lookup (cached unless `refresh`)."""
        return self.run(self.aio.model(name, refresh=refresh))

    def destroy(self, name: str) -> bool:
        return self.run(self.aio.destroy(name))

    def save(self, name: str, path: str | os.PathLike) -> str:
        """Save model `name` under directory `path`, whole or not at all; returns the
        absolute directory. See AsyncClient.save."""
        return self.run(self.aio.save(name, path))

    def checkpoint(self, name: str) -> dict:
        """Checkpoint model `name` now, under the master's checkpoint_dir."""
        return self.run(self.aio.checkpoint(name))

    def load(self, path: str | os.PathLike, name: str | None = None, *,
             replicas: int | None = None) -> ModelInfo:
        """Load a saved model (or a checkpoint) under its saved name, or `name`."""
        return self.run(self.aio.load(path, name, replicas=replicas))

    def create_matrix(self, name: str, rows: int, cols: int, dtype: str = "float32", *,
                      partition_by: str = "rows", partitioner: str = "range", parts: int = 0,
                      init: dict | None = None, aggregate: str = "add",
                      allow_nonfinite: bool = False, exists_ok: bool = False,
                      replicas: int | None = None) -> BigMatrix:
        """A dense rows × cols matrix as model `name`; returns its handle. Pushes of NaN
        or ±inf are refused unless `allow_nonfinite`."""
        spec = self.run(self.aio.create_matrix(
            name, rows, cols, dtype, partition_by=partition_by, partitioner=partitioner,
            parts=parts, init=init, aggregate=aggregate, allow_nonfinite=allow_nonfinite,
            exists_ok=exists_ok, replicas=replicas))
        return BigMatrix(self.master, name, spec.name, spec.shape, spec.dtype)

    def create_vector(self, name: str, size: int, dtype: str = "float32", *,
                      partitioner: str = "range", parts: int = 0, init: dict | None = None,
                      aggregate: str = "add", allow_nonfinite: bool = False,
                      exists_ok: bool = False, replicas: int | None = None) -> BigVector:
        """A dense vector as model `name`; returns its handle."""
        spec = self.run(self.aio.create_vector(
            name, size, dtype, partitioner=partitioner, parts=parts, init=init,
            aggregate=aggregate, allow_nonfinite=allow_nonfinite, exists_ok=exists_ok,
            replicas=replicas))
        return BigVector(self.master, name, spec.name, spec.shape, spec.dtype)

    def matrix(self, model: str, table: str = "values") -> BigMatrix:
        """A picklable handle on an existing matrix table."""
        spec = self.run(self.aio.matrix(model, table))
        return BigMatrix(self.master, model, spec.name, spec.shape, spec.dtype)

    def vector(self, model: str, table: str = "values") -> BigVector:
        """A picklable handle on an existing vector table."""
        spec = self.run(self.aio.vector(model, table))
        return BigVector(self.master, model, spec.name, spec.shape, spec.dtype)

    # -- data --------------------------------------------------------------------------
    def pull_rows(self, model: str, table: str, rows: Any) -> np.ndarray:
        """Rows of a matrix (or elements of a vector), in the order asked."""
        return self.run(self.aio.pull_rows(model, table, rows))

    def pull(self, model: str, table: str, rows: Any, cols: Any = None) -> np.ndarray:
        """Elements (rows[i], cols[i]) of a matrix, or (rows[i]) of a vector."""
        return self.run(self.aio.pull(model, table, rows, cols))

    def push_rows(self, model: str, table: str, rows: Any, values: Any) -> None:
        """Combine `values[i]` into row `rows[i]` with the table's aggregator, exactly once."""
        self.run(self.aio.push_rows(model, table, rows, values))

    def push(self, model: str, table: str, rows: Any, cols: Any = None,
             values: Any = None) -> None:
        """Combine `values[i]` into element (rows[i], cols[i]) (vector: rows[i]), exactly once."""
        self.run(self.aio.push(model, table, rows, cols, values))

    def call(self, model: str, op: str, args: dict | None = None, arrays: tuple = (), *,
             parts: Iterable[int] | None = None, once: bool = False,
             idempotent: bool = False) -> list[tuple[dict, tuple[np.ndarray, ...]]]:
        """Run a model's server op (UDF) on partitions `parts` (default: all); each
        partition's reply `(args, arrays)` in the order of `parts`. Use `once=True` for
        ops that change state (`idempotent=True` for reads), so that they can be retried:
        see AsyncClient.call."""
        return self.run(self.aio.call(model, op, args, arrays, parts=parts, once=once,
                                      idempotent=idempotent))

    def report(self, model: str, **values: float) -> None:
        """Publish training gauges of `model` (`report("m", loss=0.31)`): the master keeps
        the latest of each and shows them in status and on its metrics endpoint. See
        AsyncClient.report."""
        self.run(self.aio.report(model, **values))


def _forget_after_fork() -> None:
    global _registry_pid
    if _registry_pid != os.getpid():  # a forked child must not share its parent's loop
        _registry.clear()
        _registry_pid = os.getpid()


def get_client(master: str) -> Client:
    """This process's client for `master`, made on first use from PSF_* settings."""
    with _registry_lock:
        _forget_after_fork()
        client = _registry.get(master)
    if client is None or client.closed:
        client = Client(master)
        with _registry_lock:
            client = _registry.setdefault(master, client)
    return client


@dataclass(frozen=True)
class _Handle:
    master: str
    model: str
    table: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def client(self) -> Client:
        return get_client(self.master)

    def destroy(self) -> bool:
        """Destroy the whole model this table belongs to."""
        return self.client.destroy(self.model)

    def save(self, path: str) -> str:
        """Save the whole model this table belongs to under `path`."""
        return self.client.save(self.model, path)


class BigMatrix(_Handle):
    """A dense matrix on the parameter server."""

    def pull_rows(self, rows: Any) -> np.ndarray:
        return self.client.pull_rows(self.model, self.table, rows)

    def pull(self, rows: Any, cols: Any) -> np.ndarray:
        return self.client.pull(self.model, self.table, rows, cols)

    def push_rows(self, rows: Any, values: Any) -> None:
        self.client.push_rows(self.model, self.table, rows, values)

    def push(self, rows: Any, cols: Any, values: Any) -> None:
        self.client.push(self.model, self.table, rows, cols, values)

    def to_numpy(self) -> np.ndarray:
        """The whole matrix (split into frame-sized requests)."""
        return self.pull_rows(np.arange(self.shape[0]))


class BigVector(_Handle):
    """A dense vector on the parameter server."""

    def pull(self, idx: Any) -> np.ndarray:
        return self.client.pull_rows(self.model, self.table, idx)

    def push(self, idx: Any, values: Any) -> None:
        self.client.push_rows(self.model, self.table, idx, values)

    def to_numpy(self) -> np.ndarray:
        return self.pull(np.arange(self.shape[0]))
