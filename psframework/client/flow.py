"""What a client keeps per server: the exactly-once tags of its requests (see
transport.once) and the bytes it has in flight on the connection."""

from __future__ import annotations

import asyncio
import heapq
import os
from typing import Awaitable, Callable

__all__ = ["Tags", "Window"]


class Tags:
    """The exactly-once tags of one server's requests: a random stream id, seqs from 1,
    and the floor — the lowest seq still unanswered (every one below is finished)."""

    def __init__(self) -> None:
        self.stream = os.urandom(8)
        self._next = 1
        self._open: list[int] = []  # a heap of unanswered seqs (finished ones in _done)
        self._done: set[int] = set()

    def new(self) -> int:
        seq = self._next
        self._next += 1
        heapq.heappush(self._open, seq)
        return seq

    def tag(self, seq: int) -> list:
        while self._open and self._open[0] in self._done:
            self._done.discard(heapq.heappop(self._open))
        return [self.stream, seq, self._open[0] if self._open else self._next]

    def finish(self, seq: int) -> None:
        self._done.add(seq)


class Window:
    """At most `capacity` bytes of requests (and their replies) in flight on one
    connection; a request larger than that still goes when it is alone, and a small one
    (under 1/64 of it) never waits: it is not what fills a connection."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0  # the most bytes ever in flight (for tests and stats)
        self._changed = asyncio.Condition()

    def __call__(self, nbytes: int, send: Callable[[], Awaitable]) -> Awaitable:
        """`send()` once `nbytes` more fit in the window; an awaitable of its result."""
        if nbytes < self.capacity // 64:
            return send()
        return self._admitted(nbytes, send)

    async def _admitted(self, nbytes: int, send: Callable[[], Awaitable]):
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0
                                         or self.used + nbytes <= self.capacity)
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        try:
            return await send()
        finally:
            async with self._changed:
                self.used -= nbytes
                self._changed.notify_all()
