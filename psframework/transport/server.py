"""The server end of a connection, and `serve`, which listens.

A server treats a connection as a stranger until its handshake completes: it may send
only frames of `PREAUTH_LIMITS`, must finish within `handshake_timeout` seconds, and is
refused outright when the server already has `max_connections` open. An idle connection
holds a few tens of kilobytes (the decoder's staging buffer grows only for busy streams).
Each request goes to the handler; a failing one gets an ERROR reply and the connection
stays up, while malformed frames end this connection only.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import socket
import ssl
from typing import Awaitable, Callable

from psframework.errors import ConnectionLostError, ProtocolError, PSError, RemoteError
from psframework.protocol import Kind, Limits, Message, OversizedFrame, ServerHandshake
from psframework.transport.peer import Peer, Traffic
from psframework.transport.ratelimit import RateLimited

log = logging.getLogger("psframework.transport")

__all__ = ["ServerConnection", "Handler", "PREAUTH_LIMITS", "serve"]

#: A request handler returns the reply's (args, arrays), either directly or as an awaitable.
Handler = Callable[[Message], "tuple[dict, tuple] | Awaitable[tuple[dict, tuple]]"]

#: What a connection may send before its handshake is complete (a HELLO is ~60 bytes).
PREAUTH_LIMITS = Limits(64 * 1024, 16 * 1024)


class ServerConnection(Peer):
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
            _refusals.warning("closing connection from %s: no handshake within %gs",
                              self.peername, self.handshake_timeout)
            self._refuse(ProtocolError(f"the handshake did not complete within "
                                       f"{self.handshake_timeout:g}s (handshake_timeout)"))

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.transport is not None:  # (it is: the transport calls this)
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def on_protocol_error(self, err: ProtocolError) -> None:
        _refusals.warning("closing connection from %s: %s", self.peername, err)
        self._refuse(err)

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
                self._refuse(ProtocolError(f"a frame of {ev.size} bytes before the handshake "
                                           f"completed (at most {ev.limit} are allowed)"))
                return
            try:
                for reply in self.handshake.receive(ev):
                    self.send(reply)
            except PSError as e:
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


async def serve(handler: Handler, host: str, port: int, *, limits: Limits,
                secret: bytes | None, name: Callable[[], str], traffic: Traffic | None = None,
                handshake_timeout: float = 10.0, max_connections: int = 1024,
                ssl_context: ssl.SSLContext | None = None,
                sock: socket.socket | None = None) -> asyncio.Server:
    """Listen on host:port — or on `sock`, a socket listening already (one a parent
    process bound and handed down) — over TLS with `ssl_context`. `name()` is the server's
    current name, reported in handshakes and errors; `traffic` adds up what all its
    connections carry and holds the set of them."""
    traffic = traffic if traffic is not None else Traffic()
    where = {"sock": sock} if sock is not None else {"host": host, "port": port,
                                                     "reuse_address": True}
    if secret is None and not _loopback(host):
        log.warning("listening on %s without a shared secret: anyone who can reach this port "
                    "controls the cluster (reads, writes, creates and destroys models); set "
                    "PSF_SECRET on every server and client", host)
    return await asyncio.get_running_loop().create_server(
        lambda: ServerConnection(handler, limits, secret, name, traffic,
                                 handshake_timeout=handshake_timeout,
                                 max_connections=max_connections),
        **where, ssl=ssl_context,
        ssl_handshake_timeout=handshake_timeout if ssl_context is not None else None)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


_refusals = RateLimited(log)
_failures = RateLimited(log)  # requests failing with errors that are not psframework's
