"""Exactly-once requests: a dedup window any server puts in front of its handler.

A client tags a request that must not be applied twice (a push, a model update, a catalog
change) with `once = [client id, sequence number]`, and resends a request with the same
tag when its reply is lost. The server remembers the replies of the last `capacity` tags:
a resend gets the remembered reply instead of a second application. A request still
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
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.duplicates = 0
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
            self._seen[key] = fut.result()

    def _remember(self, key: Hashable, reply: Any) -> None:
        self._seen[key] = reply
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
