"""What both ends of a connection share: an asyncio `BufferedProtocol` that moves frames.

The event loop writes socket data straight into the decoder's buffers (a big array lands
in its final buffer with no copy in Python). Writes go out as the encoder's buffer list,
one writev per frame; while the kernel's write buffer is full, `_writable` is clear and
the two ends react as they must (a client pauses its senders, a server stops reading new
requests). TCP_NODELAY is set on every socket: requests are small and latency matters.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from psframework.errors import ConnectionLostError, ProtocolError
from psframework.protocol import FrameDecoder, Limits, Message, OversizedFrame, encode

__all__ = ["Peer", "Traffic"]


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
        self._writable.set()  # wake blocked senders: they will find the connection closed

    def send(self, msg: Message) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLostError(f"connection to {self.peername} is closed")
        buffers = encode(msg, self.peer_limits)
        self.traffic.bytes_out += sum(len(b) if isinstance(b, bytes) else b.nbytes for b in buffers)
        self.transport.writelines(buffers)  # one writev per frame

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def on_event(self, ev: Message | OversizedFrame) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_protocol_error(self, err: ProtocolError) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
