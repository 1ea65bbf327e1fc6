"""The dedup window that makes once-only requests (pushes) apply exactly once.

A client tags each such request with (client id, sequence number) and resends a request
with the same tag when its reply is lost. The shard remembers the replies of the last
`capacity` tags: a resend gets the remembered reply instead of a second application. A
request still being applied is remembered as its future, so a resend that arrives
meanwhile waits for the one application rather than starting another.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable

__all__ = ["PushLog"]


class PushLog:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[Hashable, Any] = OrderedDict()
        self.duplicates = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def get(self, key: Hashable) -> Any:
        self.duplicates += 1
        return self._seen[key]

    def discard(self, key: Hashable) -> None:
        self._seen.pop(key, None)

    def put(self, key: Hashable, reply: Any) -> None:
        self._seen[key] = reply
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
