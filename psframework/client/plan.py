"""How a scattered request is cut up: into chunks below the frame limit, each a `Job`
for one partition, with where its part sits in the whole request — and how a reply is
put back there (`filler`), or read there directly (`block`)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from psframework.protocol import Message

__all__ = ["HEADER_ROOM", "Job", "chunks", "at", "block", "filler", "keeper"]

HEADER_ROOM = 64 * 1024  # bytes kept free in every frame for the header


def chunks(n: int, bytes_per_item: int, limit: int) -> Iterable[slice]:
    step = max(1, (limit - HEADER_ROOM) // max(1, bytes_per_item))
    return (slice(a, min(a + step, n)) for a in range(0, max(n, 1), step))


def at(pos: np.ndarray | slice, chunk: slice) -> np.ndarray | slice:
    """Where chunk `chunk` of a partition's part sits in the whole request."""
    if isinstance(pos, slice):
        start = pos.start or 0
        return slice(start + chunk.start, start + chunk.stop)
    return pos[chunk]


def _ignore(reply: Message) -> None:
    pass


class Job(NamedTuple):
    """One request of a scattered call: to partition `part`; `on_reply` takes the reply;
    `reply_bytes` is what the reply will hold (for the connection's window); `into`, a
    contiguous part of the caller's result for the reply to land in (see
    ClientConnection.start)."""

    part: int
    op: str
    args: dict
    arrays: tuple
    on_reply: Callable[[Message], None] = _ignore
    reply_bytes: int = 0
    into: np.ndarray | None = None  # where the reply's one array may be read to, no copy


def block(out: np.ndarray, at: Any) -> np.ndarray | None:
    """out[at] if it is one contiguous block of `out` that a reply can be read into as it
    is (a whole number of 8-byte words: a frame pads its arrays to 8), else None."""
    if not isinstance(at, slice) or not out.flags.c_contiguous:
        return None
    piece = out[at]
    return piece if piece.nbytes % 8 == 0 and piece.nbytes else None


def filler(out: np.ndarray, at: Any, into: np.ndarray | None = None
           ) -> Callable[[Message], None]:
    """Put a reply's array at out[at], unless it was read there already (into `into`,
    out[at] itself: see `block`)."""
    def fill(reply: Message) -> None:
        got = reply.arrays[0]
        if into is None or not np.may_share_memory(got, into):  # a buffer of its own
            out[at] = got
    return fill


def keeper(replies: list[Any], i: int) -> Callable[[Message], None]:
    """Keep a reply's (args, arrays) at replies[i]."""
    def keep(reply: Message) -> None:
        replies[i] = (reply.args, reply.arrays)
    return keep
