"""asyncio protocols that move frames: one class per side of a connection.

Both sides read with `asyncio.BufferedProtocol`, so the event loop writes socket data
straight into the decoder's buffers (a big array lands in its final bytearray with no
copy in Python). Writes go out as the encoder's buffer list; write-side backpressure
pauses senders (client) or pauses reading new requests (server) while the kernel buffer
is full. TCP_NODELAY is set on every socket: requests are small and latency matters.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable

from psframework.errors import (
    ConnectionLostError, ProtocolError, PSError, RemoteError, RequestTimeoutError,
    error_from_wire,
)
from psframework.protocol import (
    ClientHandshake, FrameDecoder, Kind, Limits, Message, OversizedFrame, ServerHandshake, encode,
)

log = logging.getLogger("psframework.transport")

__all__ = ["ClientConnection", "ServerConnection", "Handler", "Traffic", "connect", "serve"]

#: A request handler returns the reply's (args, arrays), either directly or as an awaitable.
Handler = Callable[[Message], "tuple[dict, tuple] | Awaitable[tuple[dict, tuple]]"]


@dataclass
class Traffic:
    """Bytes and requests a server's connections carried (for stats and benchmarks)."""

    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0


class _Peer(asyncio.BufferedProtocol):
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


class ClientConnection(_Peer):
    """The client end: many requests in flight, matched to replies by request id."""

    def __init__(self, limits: Limits, secret: bytes | None) -> None:
        super().__init__(limits)
        self.handshake = ClientHandshake(secret)
        self.ready = asyncio.get_running_loop().create_future()
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._lost: PSError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send(self.handshake.start())

    def on_event(self, ev: Message | OversizedFrame) -> None:
        if isinstance(ev, OversizedFrame):
            fut = self._pending.pop(ev.rid, None)
            if fut is not None and not fut.done():
                fut.set_exception(ProtocolError(
                    f"reply of {ev.size} bytes exceeds this client's max_frame_bytes={ev.limit}; "
                    "request fewer rows at once or raise PSF_MAX_FRAME_BYTES", op=ev.op or None))
            return
        if not self.handshake.done:
            try:
                nxt = self.handshake.receive(ev)
            except PSError as e:
                self._abort(e)
                return
            if nxt is not None:
                self.send(nxt)
            if self.handshake.done:
                self.peer_limits = Limits(
                    min(self.limits.max_frame_bytes, self.handshake.server_limits.max_frame_bytes),
                    min(self.limits.max_header_bytes, self.handshake.server_limits.max_header_bytes))
                self.ready.set_result(None)
            return
        fut = self._pending.pop(ev.rid, None)
        if fut is None or fut.done():
            return  # a reply to a request that already timed out
        if ev.kind == Kind.ERROR:
            fut.set_exception(error_from_wire(ev.args))
        else:
            fut.set_result(ev)

    def on_protocol_error(self, err: ProtocolError) -> None:
        self._abort(err)

    def _abort(self, err: PSError) -> None:
        self._lost = err
        if not self.ready.done():
            self.ready.set_exception(err)
        self._fail_pending(err)
        self.close()

    def _fail_pending(self, err: PSError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)

    def connection_lost(self, exc: Exception | None) -> None:
        err = self._lost or ConnectionLostError(
            f"connection to {self.peername} ({self.handshake.server_name or 'server'}) was lost"
            + (f": {exc}" if exc else ""), shard=self.handshake.server_name or None)
        self._lost = err
        if not self.ready.done():
            self.ready.set_exception(err)
        self._fail_pending(err)
        super().connection_lost(exc)

    @property
    def is_open(self) -> bool:
        return self._lost is None and self.transport is not None and not self.transport.is_closing()

    @property
    def server_name(self) -> str:
        return self.handshake.server_name

    async def request(self, op: str, model: str = "", args: dict | None = None,
                      arrays: tuple = (), timeout: float | None = None) -> Message:
        """Send one request and wait for its reply (or a typed error)."""
        if self._lost is not None:
            raise self._lost
        if not self._writable.is_set():  # backpressure: the kernel buffer is full
            try:
                await asyncio.wait_for(self._writable.wait(), timeout)
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"{self.server_name or self.peername} has not read for {timeout:g}s",
                    model=model or None, op=op, shard=self.server_name or None) from None
            if self._lost is not None:
                raise self._lost
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[rid] = fut
        # a timer rather than asyncio.wait_for: no extra task and loop step per request
        timer = None if timeout is None else loop.call_at(loop.time() + timeout, _expire, fut)
        try:
            self.send(Message(Kind.REQUEST, rid, op, model, args or {}, tuple(arrays)))
            return await fut
        except _Expired:
            raise RequestTimeoutError(
                f"no reply from {self.server_name or self.peername} within {timeout:g}s; the "
                "server may be overloaded or stuck (raise PSF_REQUEST_TIMEOUT for big requests)",
                model=model or None, op=op, shard=self.server_name or None) from None
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(rid, None)


class _Expired(Exception):
    pass


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


class ServerConnection(_Peer):
    """The server end: handshake first, then each request goes to the handler. A failing
    request gets an ERROR reply naming the server; the connection stays up. Malformed
    frames end this connection only."""

    def __init__(self, handler: Handler, limits: Limits, secret: bytes | None,
                 name: Callable[[], str], traffic: Traffic | None = None) -> None:
        super().__init__(limits, traffic)
        self.handler = handler
        self._name = name
        self.handshake = ServerHandshake(secret, limits, name())
        self._tasks: set[asyncio.Task] = set()  # requests still running, kept referenced

    @property
    def name(self) -> str:
        return self._name()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def on_protocol_error(self, err: ProtocolError) -> None:
        log.warning("closing connection from %s: %s", self.peername, err)
        self._refuse(0, err)

    def _refuse(self, rid: int, err: PSError) -> None:
        try:
            self.send(Message(Kind.ERROR, rid, args=self._wire(err)))
        except PSError:
            pass
        self.close()

    def _wire(self, err: PSError) -> dict:
        fields = err.to_wire()
        fields["shard"] = fields.get("shard") or self.name
        return fields

    def on_event(self, ev: Message | OversizedFrame) -> None:
        if not self.handshake.done:
            if isinstance(ev, OversizedFrame):
                self._refuse(ev.rid, ProtocolError("oversized frame during the handshake"))
                return
            try:
                for reply in self.handshake.receive(ev):
                    self.send(reply)
            except PSError as e:
                log.warning("refused connection from %s: %s", self.peername, e)
                self._refuse(ev.rid, e)
            return
        if isinstance(ev, OversizedFrame):
            self._reply_error(ev.rid, ProtocolError(
                f"request of {ev.size} bytes exceeds this server's max_frame_bytes={ev.limit}; "
                "send smaller batches", model=ev.model or None, op=ev.op or None))
            return
        if ev.kind != Kind.REQUEST:
            self._refuse(ev.rid, ProtocolError(f"expected a REQUEST, got {ev.kind.name}"))
            return
        self.traffic.requests += 1
        try:
            result = self.handler(ev)
        except Exception as e:  # noqa: BLE001 - every failure becomes that request's error
            self._reply_error(ev.rid, self._typed(e, ev))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._finish(ev, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._reply(ev.rid, result)

    async def _finish(self, req: Message, result: Awaitable) -> None:
        try:
            out = await result
        except Exception as e:  # noqa: BLE001
            self._reply_error(req.rid, self._typed(e, req))
            return
        self._reply(req.rid, out)

    def _typed(self, e: Exception, req: Message) -> PSError:
        if isinstance(e, PSError):
            e.model = e.model or req.model or None
            e.op = e.op or req.op
            return e
        log.exception("op %s on model %r failed", req.op, req.model, exc_info=e)
        return RemoteError(f"{type(e).__name__}: {e}", model=req.model or None, op=req.op)

    def _reply(self, rid: int, result: tuple[dict, tuple]) -> None:
        args, arrays = result
        try:
            self.send(Message(Kind.REPLY, rid, args=args, arrays=tuple(arrays)))
        except ProtocolError as e:  # the reply itself is too large for the peer
            self._reply_error(rid, e)
        except ConnectionLostError:
            pass

    def _reply_error(self, rid: int, err: PSError) -> None:
        try:
            self.send(Message(Kind.ERROR, rid, args=self._wire(err)))
        except ConnectionLostError:
            pass


async def connect(host: str, port: int, *, limits: Limits, secret: bytes | None,
                  timeout: float) -> ClientConnection:
    """Open a connection and complete the handshake, or raise a typed error in `timeout`."""
    loop = asyncio.get_running_loop()
    conn = None
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: ClientConnection(limits, secret), host, port), timeout)
        await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
    except asyncio.TimeoutError:
        if conn is not None:  # connected, but the handshake never finished
            conn.close()
        raise RequestTimeoutError(f"could not connect to {host}:{port} within {timeout:g}s; "
                                  "is the server running and reachable?") from None
    except OSError as e:
        raise ConnectionLostError(f"cannot connect to {host}:{port} ({e.strerror or e}); is the "
                                  "server running there?") from None
    return conn


async def serve(handler: Handler, host: str, port: int, *, limits: Limits,
                secret: bytes | None, name: Callable[[], str], traffic: Traffic | None = None
                ) -> asyncio.AbstractServer:
    """Listen on host:port. `name()` is the server's current name, reported in handshakes
    and errors; `traffic` adds up what all its connections carry."""
    return await asyncio.get_running_loop().create_server(
        lambda: ServerConnection(handler, limits, secret, name, traffic),
        host, port, reuse_address=True)
