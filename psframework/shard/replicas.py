"""What a shard needs to keep copies of a partition consistent: a write gate per
partition, and the forwarding of writes from a partition's primary to its backups.

- `Gate`: writes to a partition pass through its gate. A snapshot (a checkpoint, or the
  copy that builds a new backup) closes it: new writes wait, the snapshot waits for the
  writes still running (on the thread pool) to finish, copies, and opens it again — a
  brief per-partition pause, while the other partitions go on.
- `Forwarder`: a primary applies a write and sends the same request, tagged `replica`,
  to every backup of the partition at once; it answers the client only when all have
  applied it (primary-backup replication). A backup that cannot be reached is retried
  until it answers or the master takes it out of the partition's backups (it is dead):
  a write is acknowledged only once every live copy holds it. The backups apply the
  client's exactly-once tag too, so a client retrying a write after its primary died is
  answered by the promoted backup from memory, not applied twice.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from psframework.config import Settings, parse_address
from psframework.errors import ConnectionLostError, PSError, RequestTimeoutError
from psframework.protocol import Message
from psframework.transport import ClientConnection, connect

__all__ = ["Gate", "Forwarder"]


class Gate:
    """The write gate of one partition: open, or closed for a snapshot."""

    __slots__ = ("active", "_opened", "_idle")

    def __init__(self) -> None:
        self.active = 0  # writes running off the event loop
        self._opened: asyncio.Event | None = None  # set while open; None: never closed
        self._idle: asyncio.Event | None = None

    @property
    def is_open(self) -> bool:
        return self._opened is None or self._opened.is_set()

    async def enter(self) -> None:
        while self._opened is not None and not self._opened.is_set():  # not is_open
            await self._opened.wait()
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    async def close(self) -> None:
        """Stop new writes and wait for the running ones; `open()` undoes it."""
        while self._opened is not None and not self._opened.is_set():
            await self._opened.wait()  # another snapshot holds it: queue behind it
        if self._opened is None:
            self._opened = asyncio.Event()
        self._opened.clear()
        while self.active:
            self._idle = asyncio.Event()
            await self._idle.wait()
        self._idle = None

    def open(self) -> None:
        if self._opened is not None:  # (it is: open() follows a close())
            self._opened.set()


class Forwarder:
    """Sends a primary's writes to its backups, one reused connection per backup."""

    def __init__(self, settings: Settings, targets: Callable[[str, str, int], list[str]]) -> None:
        self.settings = settings
        self._targets = targets  # (model, uid, part) -> the backups' addresses, as of now
        self._tls = settings.client_tls()
        self._conns: dict[str, ClientConnection] = {}

    async def connection(self, address: str) -> ClientConnection:
        conn = self._conns.get(address)
        if conn is None or not conn.is_open:
            s = self.settings
            host, port = parse_address(address)
            conn = await connect(host, port, limits=s.limits, secret=s.secret_bytes,
                                 timeout=s.connect_timeout, ssl_context=self._tls)
            self._conns[address] = conn
        return conn

    def forward(self, msg: Message, uid: str, part: int,
                addresses: list[str]) -> Awaitable[list[PSError]]:
        """Send `msg` to the backups now — so that writes reach a backup in the order the
        primary applied them, which its exactly-once window relies on — and return an
        awaitable of the errors of those that refused it."""
        args = {**msg.args, "replica": True}
        sent = [self._send(address, msg, args) for address in addresses]
        return self._gather(msg, args, uid, part, addresses, sent)

    def _send(self, address: str, msg: Message, args: dict) -> Awaitable | None:
        conn = self._conns.get(address)
        if conn is None or not conn.is_open:
            return None
        try:
            return conn.start(msg.op, msg.model, args, msg.arrays, self.settings.request_timeout)
        except PSError:
            return None

    async def _gather(self, msg: Message, args: dict, uid: str, part: int,
                      addresses: list[str], sent: list) -> list[PSError]:
        out = await asyncio.gather(*(self._one(msg, args, uid, part, a, first)
                                     for a, first in zip(addresses, sent)))
        return [e for e in out if e is not None]

    async def _one(self, msg: Message, args: dict, uid: str, part: int, address: str,
                   reply: Awaitable | None) -> PSError | None:
        """Wait for `reply`; resend while the backup cannot be reached, until it answers
        or the master drops it from the partition's backups (it is dead)."""
        delay = 0.02
        while True:
            if reply is not None:
                try:
                    await reply
                    return None
                except (ConnectionLostError, RequestTimeoutError):
                    pass
                except PSError as e:
                    return e
            if address not in self._targets(msg.model, uid, part):
                return None
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.25)
            try:
                conn = await self.connection(address)
                reply = conn.start(msg.op, msg.model, args, msg.arrays,
                                   self.settings.request_timeout)
            except (ConnectionLostError, RequestTimeoutError):
                reply = None

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
