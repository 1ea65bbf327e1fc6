"""Exactly-once requests: a dedup window any server puts in front of its handler.

A client tags a request that must not be applied twice (a push, a model update, a catalog
change) with `once = [stream, seq, floor]`: `stream` is 8 random bytes the client uses
for this one server, `seq` counts that stream's tagged requests from 1, and `floor` is
the lowest seq the client may still send (every seq below it has had its answer, or the
client has given up on it). A retry resends the same stream and seq.

The window keeps, per stream, the replies of the seqs at or above the floor:

- a repeated tag gets the remembered reply instead of a second application; a repeat
  that arrives while the first is still running waits for that one application;
- a request that failed is forgotten, so its retry runs for real;
- a seq below the floor is refused, not applied: the client is done with it, so this is
  a stale copy (and every seq the window dropped to bound its memory is below a floor).

So a tag is applied at most once, whatever the window forgets, and a well-behaved
client's remembered replies are just those of its requests in flight. The window is
bounded all the same — in tags (`capacity`), in bytes (`max_bytes`, every reply counted
with its arrays and its args) and in streams (`max_streams`) — against clients that
never advance their floor: dropping the oldest reply raises its stream's floor past it,
so a late retry of it is refused with an error that says its outcome is unknown, never
applied twice.

Only state-changing requests enter the window: ops the server names as `reads` are
answered without being remembered, whatever tag they carry.

What a window remembers of one partition travels with the partition's data (`export` /
`adopt`): a checkpoint holds it, and a shard that restores the partition, or builds a
backup of it, takes it over — so a client retrying a push after a failover is answered,
not applied twice, if the copy it now reaches already holds that push.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections import OrderedDict
from typing import Any, Callable, Iterable

from psframework.errors import ProtocolError, StaleRequestError
from psframework.protocol import Message

__all__ = ["OnceLog", "footprint", "REPLAYED"]

MAX_TAG = 1 << 62
ENTRY_OVERHEAD = 240  # bytes of bookkeeping per remembered reply (dict slots, key, tuple)

_Key = tuple[bytes, int]  # a request's (stream id, seq)


class _Stream:
    __slots__ = ("id", "floor", "seqs", "running")

    def __init__(self, stream_id: bytes) -> None:
        self.id = stream_id
        self.floor = 0
        self.seqs: dict[int, None] = {}  # remembered seqs, in arrival order
        self.running = 0  # its requests still being applied


class OnceLog:
    def __init__(self, capacity: int, max_bytes: int = 64 << 20, *,
                 reads: Iterable[str] = (), max_streams: int = 65_536) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_streams = max_streams
        self.reads = frozenset(reads)
        self.duplicates = 0
        self.stale = 0
        self.nbytes = 0  # of the remembered replies, bookkeeping included
        # (stream, seq) -> (reply, its bytes, (model, part) it was applied to); oldest first
        self._replies: OrderedDict[_Key, tuple[Any, int, tuple]] = OrderedDict()
        self._running: dict[_Key, asyncio.Future] = {}
        self._streams: OrderedDict[bytes, _Stream] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._replies) + len(self._running)

    def wrap(self, dispatch: Callable[[Message], Any]) -> Callable[[Message], Any]:
        """A handler that runs `dispatch` at most once per tag."""
        def handle(msg: Message):
            tag = msg.args.get("once")
            if tag is None or msg.op in self.reads:
                return dispatch(msg)
            stream_id, seq, floor = _parse(tag)
            key = (stream_id, seq)
            where = (msg.model, msg.args.get("part"))
            stream = self._stream(stream_id)
            if floor > stream.floor:
                self._advance(stream, floor)
            if key in self._running:
                self.duplicates += 1
                return asyncio.shield(self._running[key])
            if key in self._replies:
                self.duplicates += 1
                return self._replies[key][0]
            if seq < stream.floor:
                self.stale += 1
                raise StaleRequestError(
                    f"request {seq} of this client arrived after the server stopped "
                    "remembering it (the client had moved on, or the exactly-once window "
                    "was full: dedup_window / dedup_bytes); it was not applied now, and "
                    "whether an earlier copy was applied is unknown", op=msg.op)
            result = dispatch(msg)
            if inspect.isawaitable(result):
                result = asyncio.ensure_future(result)
                self._running[key] = result
                stream.running += 1
                result.add_done_callback(lambda f: self._settle(key, stream, f, where))
            else:
                self._remember(key, stream, result, where)
            return result
        return handle

    # -- bookkeeping -------------------------------------------------------------------
    def _stream(self, stream_id: bytes) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = _Stream(stream_id)
            while len(self._streams) > self.max_streams:
                self._drop_stream()
        else:
            self._streams.move_to_end(stream_id)
        return stream

    def _drop_stream(self) -> None:
        """Forget the least recently used stream that has no request running: its
        remembered replies go, and a stream seen again starts with floor 0 — safe only
        because its old copies are long gone (it was idle longest of `max_streams`)."""
        stream = next((s for s in self._streams.values() if not s.running), None)
        if stream is None:
            return
        del self._streams[stream.id]
        for seq in stream.seqs:
            self._forget((stream.id, seq))

    def _advance(self, stream: _Stream, floor: int) -> None:
        stream.floor = floor
        seqs = stream.seqs
        while seqs:
            seq = next(iter(seqs))
            if seq >= floor:
                break
            del seqs[seq]
            self._forget((stream.id, seq))

    def _settle(self, key: _Key, stream: _Stream, fut: asyncio.Future, where: tuple) -> None:
        del self._running[key]
        stream.running -= 1
        if not fut.cancelled() and fut.exception() is None and key[1] >= stream.floor:
            self._remember(key, stream, fut.result(), where)

    def _remember(self, key: _Key, stream: _Stream, reply: Any, where: tuple) -> None:
        size = footprint(reply) + ENTRY_OVERHEAD
        self._replies[key] = (reply, size, where)
        stream.seqs[key[1]] = None
        self.nbytes += size
        while len(self._replies) > 1 and (len(self._replies) > self.capacity
                                           or self.nbytes > self.max_bytes):
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        """Drop the oldest reply and raise its stream's floor past it, so that a retry
        of it is refused rather than applied again."""
        key = next(iter(self._replies))
        self._forget(key)
        stream, seq = self._streams[key[0]], key[1]
        stream.seqs.pop(seq, None)
        if seq >= stream.floor:
            self._advance(stream, seq + 1)

    def _forget(self, key: _Key) -> None:
        entry = self._replies.pop(key, None)
        if entry is not None:
            self.nbytes -= entry[1]


    # -- hand-over with a partition -------------------------------------------------------
    def export(self, model: str, part: int) -> dict:
        """What this window holds of partition `part` of `model`, JSON-ready: every
        stream's floor, and the seqs applied to that partition that are still remembered
        (their replies are not kept: a resend is answered with `REPLAYED`)."""
        applied: dict[bytes, list[int]] = {}
        for (stream_id, seq), (_, _, where) in self._replies.items():
            if where == (model, part):
                applied.setdefault(stream_id, []).append(seq)
        return {"floors": [[sid.hex(), s.floor] for sid, s in self._streams.items() if s.floor],
                "applied": [[sid.hex(), seqs] for sid, seqs in applied.items()]}

    def adopt(self, model: str, part: int, state: Any) -> None:
        """Take over what another window held of a partition (`export`'s output, from a
        peer: anything malformed is a ProtocolError)."""
        try:
            floors = [(bytes.fromhex(sid), int(f)) for sid, f in state.get("floors", ())]
            applied = [(bytes.fromhex(sid), [int(q) for q in seqs])
                       for sid, seqs in state.get("applied", ())]
        except (TypeError, ValueError, AttributeError):
            raise ProtocolError("malformed exactly-once state") from None
        for sid, floor in floors:
            _parse([sid, floor, floor])
            stream = self._stream(sid)
            if floor > stream.floor:
                self._advance(stream, floor)
        for sid, seqs in applied:
            stream = self._stream(sid)
            for seq in seqs:
                key = (sid, seq)
                if seq >= stream.floor and key not in self._replies and key not in self._running:
                    self._remember(key, stream, REPLAYED, (model, part))


#: The reply to a resend of a request that was applied before its partition moved: the
#: original reply is gone with the shard that sent it.
REPLAYED = ({"replayed": True}, ())


def _parse(tag: Any) -> tuple[bytes, int, int]:
    if (isinstance(tag, list) and len(tag) in (2, 3) and isinstance(tag[0], bytes)
            and 0 < len(tag[0]) <= 64
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < MAX_TAG
                    for n in tag[1:])):
        return tag[0], tag[1], tag[2] if len(tag) == 3 else 0
    raise ProtocolError("args.once must be [stream (1-64 bytes), seq (int), floor (int)]")


def footprint(obj: Any, depth: int = 0) -> int:
    """Bytes an (args, arrays) reply holds in memory, roughly: its arrays exactly, its
    small values as Python objects (nested containers up to a depth, then a flat guess)."""
    if hasattr(obj, "nbytes") and hasattr(obj, "dtype"):
        return int(obj.nbytes) + 112
    size = sys.getsizeof(obj)
    if depth > 6:
        return size
    if isinstance(obj, dict):
        return size + sum(footprint(k, depth + 1) + footprint(v, depth + 1)
                          for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return size + sum(footprint(v, depth + 1) for v in obj)
    return size
