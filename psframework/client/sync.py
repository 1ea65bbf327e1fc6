"""The synchronous client: the async client on an event loop that the calling threads
drive themselves, for plain synchronous code such as Spark tasks. A call runs the loop in
the caller's thread until its own result is in — no hand-off to another thread, whose
two wake-ups cost more than the rest of a small request. Thread-safe: many threads may
call one Client at once and their requests share its connections; one of them drives the
loop (for everyone's requests) while the others wait for their results or their turn.
Called from a thread that runs an event loop already, a call drives the client's loop from
a helper thread instead.

`get_client(master)` returns the one client of this process for a master (made on first
use from PSF_* settings); handles use it, so a handle shipped to an executor reconnects
lazily there. A Client made explicitly becomes that process-wide client for its master.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from typing import Any, Coroutine, Iterator

from psframework.client.core import AsyncClient
from psframework.config import Settings
from psframework.transport import new_event_loop

__all__ = ["Client", "get_client"]

_registry: dict[str, "Client"] = {}
_registry_lock = threading.Lock()
_registry_pid = os.getpid()


class Client:
    """Blocking access to a cluster; every AsyncClient method, without `await`."""

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

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
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

    def _wait(self, result: concurrent.futures.Future) -> Any:
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


def _blocking(name: str):
    method = getattr(AsyncClient, name)

    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> Any:
        return self.run(method(self.aio, *args, **kwargs))
    return call


for _name in ("ping", "status", "create_model", "model", "destroy", "save", "load", "checkpoint",
              "create_matrix", "create_vector", "matrix", "vector", "pull_rows", "pull",
              "push_rows", "push", "call"):
    setattr(Client, _name, _blocking(_name))


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
