"""asyncio protocols that move frames: one class per side of a connection.

Both sides read with `asyncio.BufferedProtocol`, so the event loop writes socket data
straight into the decoder's buffers (a big array lands in its final bytearray with no
copy in Python). Writes go out as the encoder's buffer list; write-side backpressure
pauses senders (client) or pauses reading new requests (server) while the kernel buffer
is full. TCP_NODELAY is set on every socket: requests are small and latency matters.

A server treats a connection as a stranger until its handshake completes: it may send
only frames of `PREAUTH_LIMITS`, must finish within `handshake_timeout` seconds, and is
refused outright when the server already has `max_connections` open. An idle connection
holds a few tens of kilobytes (the decoder's staging buffer grows only for busy streams).
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import itertools
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from psframework.errors import (
    AuthError, ConnectionLostError, ProtocolError, PSError, RemoteError, RequestTimeoutError,
    error_from_wire,
)
from psframework.protocol import (
    ClientHandshake, FrameDecoder, Kind, Limits, Message, OversizedFrame, ServerHandshake, encode,
)
from psframework.transport.ratelimit import RateLimited

log = logging.getLogger("psframework.transport")

__all__ = ["ClientConnection", "ServerConnection", "Handler", "Traffic", "NotSent", "connect",
           "serve", "PREAUTH_LIMITS"]

#: A request handler returns the reply's (args, arrays), either directly or as an awaitable.
Handler = Callable[[Message], "tuple[dict, tuple] | Awaitable[tuple[dict, tuple]]"]

#: What a connection may send before its handshake is complete (a HELLO is ~60 bytes).
PREAUTH_LIMITS = Limits(64 * 1024, 16 * 1024)


class NotSent(ConnectionLostError):
    """The request never left this process (the connection was closed, or the server
    stopped reading): resending it is always safe."""


@dataclass
class Traffic:
    """Bytes, requests and connections of a server (for stats and benchmarks)."""

    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    refused: int = 0  # connections refused: over max_connections, or handshake failed/too slow
    open: set = field(default_factory=set, repr=False)  # the open ServerConnections

    @property
    def connections(self) -> int:
        return len(self.open)


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
        if ev.kind == Kind.ERROR and ev.rid == 0:  # about the connection, not one request
            err = error_from_wire(ev.args)
            self._abort(ConnectionLostError(
                f"{self.server_name or self.peername} closed the connection: {err}",
                shard=self.server_name or None))
            return
        fut = self._pending.pop(ev.rid, None)
        if fut is None or fut.done():
            return  # a reply to a request that already timed out
        if ev.kind == Kind.ERROR:
            fut.set_exception(error_from_wire(ev.args))
        else:
            fut.set_result(ev)

    def on_protocol_error(self, err: ProtocolError) -> None:
        if not self.handshake.done:
            self._abort(_hint_tls(err))
            return
        # The stream lost its framing: nothing more on it can be trusted, but the requests
        # in flight may be resent on a new connection (once-only tags make that safe).
        self._abort(ConnectionLostError(
            f"the stream from {self.server_name or self.peername} lost its framing ({err}); "
            "the connection was closed", shard=self.server_name or None))

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
        early = "" if self.handshake.done else (
            " before the handshake completed; if the server uses TLS, set PSF_TLS_CA (and a "
            "client certificate, PSF_TLS_CERT / PSF_TLS_KEY, if it asks for one)")
        err = self._lost or ConnectionLostError(
            f"connection to {self.peername} ({self.handshake.server_name or 'server'}) was lost"
            + (f": {exc}" if exc else "") + early, shard=self.handshake.server_name or None)
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
        """Send one request and wait for its reply (or a typed error). NotSent says that
        the request did not leave this process."""
        if not self._writable.is_set():  # backpressure: the kernel buffer is full
            try:
                await asyncio.wait_for(self._writable.wait(), timeout)
            except asyncio.TimeoutError:
                raise NotSent(
                    f"{self.server_name or self.peername} has not read for {timeout:g}s",
                    model=model or None, op=op, shard=self.server_name or None) from None
        if not self.is_open:
            raise NotSent(self._lost.message if self._lost is not None else
                          f"connection to {self.peername} is closed",
                          model=model or None, op=op, shard=self.server_name or None)
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
                 name: Callable[[], str], traffic: Traffic | None = None, *,
                 handshake_timeout: float = 10.0, max_connections: int = 1024) -> None:
        super().__init__(limits, traffic)
        self.handler = handler
        self._name = name
        self.handshake = ServerHandshake(secret, limits, name())
        self.decoder.limits = PREAUTH_LIMITS  # a stranger sends small frames only
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()  # requests still running, kept referenced

    @property
    def name(self) -> str:
        return self._name()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.traffic.open) >= self.max_connections:
            self.traffic.refused += 1
            _refusals.warning("refused connection from %s: %d connections open "
                              "(max_connections)", self.peername, len(self.traffic.open))
            self._refuse(ConnectionLostError(
                f"server {self.name} has {len(self.traffic.open)} connections open, its "
                "max_connections; close idle clients or raise PSF_MAX_CONNECTIONS"))
            return
        self.traffic.open.add(self)
        self._expiry = asyncio.get_running_loop().call_later(self.handshake_timeout,
                                                             self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self.traffic.open.discard(self)
        if self._expiry is not None:
            self._expiry.cancel()
        super().connection_lost(exc)

    def _handshake_expired(self) -> None:
        if not self.handshake.done:
            self.traffic.refused += 1
            _refusals.warning("closing connection from %s: no handshake within %gs",
                              self.peername, self.handshake_timeout)
            self._refuse(ProtocolError(f"the handshake did not complete within "
                                       f"{self.handshake_timeout:g}s (handshake_timeout)"))

    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def on_protocol_error(self, err: ProtocolError) -> None:
        _refusals.warning("closing connection from %s: %s", self.peername, err)
        self._refuse(_hint_tls(err))

    def _refuse(self, err: PSError) -> None:
        """Tell the peer why (an ERROR about the connection, request id 0) and close."""
        try:
            self.send(Message(Kind.ERROR, 0, args=self._wire(err)))
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
                self.traffic.refused += 1
                self._refuse(ProtocolError(f"a frame of {ev.size} bytes before the handshake "
                                           f"completed (at most {ev.limit} are allowed)"))
                return
            try:
                for reply in self.handshake.receive(ev):
                    self.send(reply)
            except PSError as e:
                self.traffic.refused += 1
                _refusals.warning("refused connection from %s: %s", self.peername, e)
                self._refuse(e)
                return
            if self.handshake.done:
                self.decoder.limits = self.limits
                if self._expiry is not None:
                    self._expiry.cancel()
            return
        if isinstance(ev, OversizedFrame):
            self._reply_error(ev.rid, ProtocolError(
                f"request of {ev.size} bytes exceeds this server's max_frame_bytes={ev.limit}; "
                "send smaller batches", model=ev.model or None, op=ev.op or None))
            return
        if ev.kind != Kind.REQUEST:
            self._refuse(ProtocolError(f"expected a REQUEST, got {ev.kind.name}"))
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
        _failures.exception("op %s on model %r failed", req.op, req.model, exc_info=e)
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
                  timeout: float, ssl_context: ssl.SSLContext | None = None
                  ) -> ClientConnection:
    """Open a connection (over TLS with `ssl_context`) and complete the handshake, or raise
    a typed error in `timeout`."""
    loop = asyncio.get_running_loop()
    conn = None
    try:
        _, conn = await asyncio.wait_for(loop.create_connection(
            lambda: ClientConnection(limits, secret), host, port, ssl=ssl_context,
            server_hostname=host if ssl_context is not None else None), timeout)
        await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
    except asyncio.TimeoutError:
        if conn is not None:  # connected, but the handshake never finished
            conn.close()
        raise RequestTimeoutError(f"could not connect to {host}:{port} within {timeout:g}s; "
                                  "is the server running and reachable?") from None
    except PSError:
        raise  # the handshake's own verdict (ConnectionLostError is an OSError too)
    except ssl.SSLError as e:
        raise AuthError(f"TLS with {host}:{port} failed ({e.reason or e}); do this client's "
                        "tls_ca and the server's certificate match (and the host name, "
                        "unless tls_check_hostname is off)?") from None
    except OSError as e:
        raise ConnectionLostError(f"cannot connect to {host}:{port} ({e.strerror or e}); is the "
                                  "server running there?") from None
    return conn


async def serve(handler: Handler, host: str, port: int, *, limits: Limits,
                secret: bytes | None, name: Callable[[], str], traffic: Traffic | None = None,
                handshake_timeout: float = 10.0, max_connections: int = 1024,
                ssl_context: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
    """Listen on host:port (over TLS with `ssl_context`). `name()` is the server's current
    name, reported in handshakes and errors; `traffic` adds up what all its connections
    carry and holds the set of them."""
    traffic = traffic if traffic is not None else Traffic()
    if secret is None and not _loopback(host):
        log.warning("listening on %s without a shared secret: anyone who can reach this port "
                    "controls the cluster (reads, writes, creates and destroys models); set "
                    "PSF_SECRET on every server and client", host)
    return await asyncio.get_running_loop().create_server(
        lambda: ServerConnection(handler, limits, secret, name, traffic,
                                 handshake_timeout=handshake_timeout,
                                 max_connections=max_connections),
        host, port, reuse_address=True, ssl=ssl_context,
        ssl_handshake_timeout=handshake_timeout if ssl_context is not None else None)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _hint_tls(err: ProtocolError) -> ProtocolError:
    """A TLS record where a frame should be (0x16: handshake, 0x15: alert) means the two
    ends disagree about TLS; say so instead of "not a psframework frame"."""
    if "got b'\\x16\\x03" in err.message or "got b'\\x15\\x03" in err.message:
        return ProtocolError(err.message + "; this looks like TLS: give both ends the same "
                             "TLS settings (tls_cert / tls_key on servers, tls_ca on clients)")
    return err


_refusals = RateLimited(log)
_failures = RateLimited(log)  # requests failing with errors that are not psframework's
