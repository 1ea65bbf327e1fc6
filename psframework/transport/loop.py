"""The event loop: uvloop where it is installed, the standard loop otherwise."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps Windows usable
    uvloop = None  # type: ignore[assignment]  # the module, or None without it

__all__ = ["new_event_loop", "run"]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def run(coro: Awaitable[T]) -> T:
    """Run `coro` (a coroutine, or any awaitable) to the end on a fresh event loop
    (uvloop where installed), the current loop meanwhile; then close that loop."""
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        asyncio.set_event_loop(None)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
