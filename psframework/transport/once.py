"""Exactly-once requests: a dedup window any server puts in front of its handler.

A client tags a request that must not be applied twice (a push, a model update, a catalog
change) with `once = [client id, sequence number]`, and resends a request with the same
tag when its reply is lost. The server remembers the replies of the last `capacity` tags,
and at most `max_bytes` of their arrays (a model op's reply may be large): a resend gets
the remembered reply instead of a second application. A request still
running is remembered as its future, so a resend that arrives meanwhile waits for that
one application rather than starting another. A request that failed is forgotten, so
its resend is tried for real.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict
from typing import Any, Callable, Hashable

from psframework.errors import ProtocolError
from psframework.protocol import Message

__all__ = ["OnceLog"]


class OnceLog:
    def __init__(self, capacity: int, max_bytes: int = 64 << 20) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.duplicates = 0
        self.nbytes = 0  # of the remembered replies' arrays
        self._seen: OrderedDict[Hashable, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def wrap(self, dispatch: Callable[[Message], Any]) -> Callable[[Message], Any]:
        """A handler that runs `dispatch` at most once per tag within the window."""
        def handle(msg: Message):
            tag = msg.args.get("once")
            if tag is None:
                return dispatch(msg)
            if not (isinstance(tag, list) and len(tag) == 2 and isinstance(tag[0], bytes)
                    and len(tag[0]) <= 64 and isinstance(tag[1], int)):
                raise ProtocolError("args.once must be [client id (bytes), sequence (int)]")
            key = (tag[0], tag[1])
            if key in self._seen:
                self.duplicates += 1
                seen = self._seen[key]
                return asyncio.shield(seen) if asyncio.isfuture(seen) else seen
            result = dispatch(msg)
            if inspect.isawaitable(result):
                result = asyncio.ensure_future(result)
                result.add_done_callback(lambda f: self._settle(key, f))
            self._remember(key, result)
            return result
        return handle

    def _settle(self, key: Hashable, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._seen.pop(key, None)
        elif key in self._seen:
            del self._seen[key]
            self._remember(key, fut.result())

    def _remember(self, key: Hashable, reply: Any) -> None:
        self._seen[key] = reply
        self.nbytes += _size(reply)
        while len(self._seen) > self.capacity or (self.nbytes > self.max_bytes
                                                  and len(self._seen) > 1):
            self.nbytes -= _size(self._seen.popitem(last=False)[1])


def _size(reply: Any) -> int:
    """Bytes of a reply's arrays ((args, arrays) replies; 0 for a future or a dict)."""
    if isinstance(reply, tuple) and len(reply) == 2 and isinstance(reply[1], (tuple, list)):
        return sum(getattr(a, "nbytes", 0) for a in reply[1])
    return 0
