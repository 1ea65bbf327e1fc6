"""The synchronous client: the async client driven by an event loop on a background
thread, for plain synchronous code such as Spark tasks. Thread-safe: many threads may call
one Client at once, and their requests share its connections.

`get_client(master)` returns the one client of this process for a master (made on first
use from PSF_* settings); handles use it, so a handle shipped to an executor reconnects
lazily there. A Client made explicitly becomes that process-wide client for its master.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from typing import Any, Coroutine

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
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"psframework-client-{master}")
        self._thread.start()
        with _registry_lock:
            _forget_after_fork()
            _registry.setdefault(master, self)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the client's loop and wait for its result."""
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("this psframework Client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self.run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
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
    if client is None or not client._thread.is_alive():
        client = Client(master)
        with _registry_lock:
            client = _registry.setdefault(master, client)
    return client
