"""What both ends of a connection share: an asyncio `BufferedProtocol` that moves frames.

The event loop writes socket data straight into the decoder's buffers (a big array lands
in its final buffer with no copy in Python). Small frames (up to `SMALL_FRAME` bytes) are
copied into an outbox as they are sent and written together once per loop step, so the
replies to a burst of requests — or a burst of requests — cost one write system call, not
one each; a bigger frame goes out at once, after the outbox, as the encoder's buffer list
(its arrays are not copied). While the kernel's write buffer is full, `_writable` is
clear and the two ends react as they must (a client pauses its senders, a server stops
reading new requests). TCP_NODELAY is set on every socket: requests are small and latency
matters.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from psframework.errors import ConnectionLostError, ProtocolError
from psframework.protocol import FrameDecoder, Limits, Message, OversizedFrame, encode

__all__ = ["Peer", "Traffic", "SMALL_FRAME"]

#: Frames up to this many bytes wait in the outbox for the end of the loop step.
SMALL_FRAME = 64 * 1024


@dataclass
class Traffic:
    """Bytes, requests and connections of a server (for stats and benchmarks)."""

    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    open: set = field(default_factory=set, repr=False)  # the open ServerConnections

    @property
    def connections(self) -> int:
        return len(self.open)


class Peer(asyncio.BufferedProtocol):
    def __init__(self, limits: Limits, traffic: Traffic | None = None) -> None:
        self.traffic = traffic or Traffic()
        self.limits = limits
        self.peer_limits = limits
        self.decoder = FrameDecoder(limits)
        self.transport: asyncio.Transport | None = None
        self.peername = "?"
        self._writable = asyncio.Event()
        self._writable.set()
        self._outbox = bytearray()
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peername = f"{peer[0]}:{peer[1]}" if peer else "?"

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.traffic.bytes_in += nbytes
        try:
            self.decoder.buffer_updated(nbytes)
        except ProtocolError as e:
            self.on_protocol_error(e)
            return
        while (ev := self.decoder.next_event()) is not None:
            self.on_event(ev)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._outbox.clear()
        self._writable.set()  # wake blocked senders: they will find the connection closed

    def send(self, msg: Message) -> None:
        """Send `msg`: in order with every frame sent before it, by the end of this loop
        step (a small frame, copied now) or at once (a big one)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLostError(f"connection to {self.peername} is closed")
        buffers = encode(msg, self.peer_limits)
        size = sum(map(len, buffers))  # memoryviews are of bytes ("B"): len is nbytes
        self.traffic.bytes_out += size
        if size <= SMALL_FRAME:
            if not self._outbox:
                self._loop.call_soon(self.flush)
            for b in buffers:  # copied now: the arrays are the caller's again at once
                self._outbox += b
            return
        self.flush()
        self.transport.writelines(buffers)  # one writev; the arrays are not copied

    def flush(self) -> None:
        """Write what the outbox holds, in one call."""
        if not self._outbox:
            return
        out, self._outbox = self._outbox, bytearray()  # the transport may keep `out`
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def close(self) -> None:
        if self.transport is not None:
            self.flush()  # a last reply (the reason for closing) goes out first
            self.transport.close()

    def on_event(self, ev: Message | OversizedFrame) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_protocol_error(self, err: ProtocolError) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
