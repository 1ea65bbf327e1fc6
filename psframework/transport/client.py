"""The client end of a connection: many requests in flight, matched to replies by request
id, each waiting at most its timeout from when it was sent; and `connect`, which opens one
and completes the handshake."""

from __future__ import annotations

import asyncio
import itertools
import ssl
from typing import Awaitable

import numpy as np

from psframework.errors import (
    AuthError, ConnectionLostError, ProtocolError, PSError, RequestTimeoutError, error_from_wire,
)
from psframework.protocol import ClientHandshake, Kind, Limits, Message, OversizedFrame
from psframework.transport.peer import Peer

__all__ = ["ClientConnection", "NotSent", "connect"]


class NotSent(ConnectionLostError):
    """The request never left this process (the connection was closed, or the server
    stopped reading): resending it is always safe."""


class ClientConnection(Peer):
    """The client end: many requests in flight, matched to replies by request id."""

    def __init__(self, limits: Limits, secret: bytes | None) -> None:
        super().__init__(limits)
        self.handshake = ClientHandshake(secret)
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()  # done once it is lost
        # per request id: its reply's future, its timeout's timer, where the reply goes
        self._pending: dict[int, tuple[asyncio.Future, asyncio.TimerHandle | None,
                                       np.ndarray | None]] = {}
        self.decoder.into = self._destination
        self._ids = itertools.count(1)
        self._lost: PSError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send(self.handshake.start())

    def on_event(self, ev: Message | OversizedFrame) -> None:
        if isinstance(ev, OversizedFrame):
            fut = self._answered(ev.rid)
            if fut is not None:
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
        fut = self._answered(ev.rid)
        if fut is None:
            return  # a reply to a request that already timed out (or was cancelled)
        if ev.kind == Kind.ERROR:
            fut.set_exception(error_from_wire(ev.args))
        else:
            fut.set_result(ev)

    def _answered(self, rid: int) -> asyncio.Future | None:
        """The future of request `rid`, now answered: None if nobody waits for it."""
        fut, timer, _ = self._pending.pop(rid, (None, None, None))
        if timer is not None:
            timer.cancel()
        return None if fut is None or fut.done() else fut

    def on_protocol_error(self, err: ProtocolError) -> None:
        if not self.handshake.done:
            self._abort(err)
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
        for fut, timer, _ in pending.values():
            if timer is not None:
                timer.cancel()
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
        if not self.closed.done():
            self.closed.set_result(None)
        super().connection_lost(exc)

    @property
    def is_open(self) -> bool:
        return self._lost is None and self.transport is not None and not self.transport.is_closing()

    @property
    def server_name(self) -> str:
        return self.handshake.server_name

    def request(self, op: str, model: str = "", args: dict | None = None,
                arrays: tuple = (), timeout: float | None = None,
                into: np.ndarray | None = None) -> Awaitable[Message]:
        """Send one request — once the kernel takes data again, if it is full — and return
        an awaitable of its reply (or a typed error). NotSent says that the request did
        not leave this process. `into`: see start."""
        if self._writable.is_set():
            return self.start(op, model, args, arrays, timeout, into)
        return self._request_when_writable(op, model, args, arrays, timeout, into)

    async def _request_when_writable(self, op: str, model: str, args: dict | None,
                                     arrays: tuple, timeout: float | None,
                                     into: np.ndarray | None) -> Message:
        try:  # backpressure: the kernel buffer is full
            await asyncio.wait_for(self._writable.wait(), timeout)
        except asyncio.TimeoutError:
            raise NotSent(
                f"{self.server_name or self.peername} has not read for {timeout:g}s",
                model=model or None, op=op, shard=self.server_name or None) from None
        return await self.start(op, model, args, arrays, timeout, into)

    def start(self, op: str, model: str = "", args: dict | None = None, arrays: tuple = (),
              timeout: float | None = None, into: np.ndarray | None = None) -> asyncio.Future:
        """Send one request now, whatever the backpressure (so that requests started one
        after another go out in that order), and return the future of its reply, which
        fails with RequestTimeoutError `timeout` seconds from now. `into`: a contiguous
        array for a reply of exactly its bytes (one array, no padding) to be read into,
        with no copy; the reply's array is then a view of it."""
        if not self.is_open:
            raise NotSent(self._lost.message if self._lost is not None else
                          f"connection to {self.peername} is closed",
                          model=model or None, op=op, shard=self.server_name or None)
        rid = next(self._ids)
        loop = self._loop
        fut = loop.create_future()
        # a timer rather than asyncio.wait_for: no extra task and loop step per request
        timer = None if timeout is None else loop.call_at(
            loop.time() + timeout, self._expire, rid, op, model, timeout)
        self._pending[rid] = (fut, timer, into)
        try:
            self.send(Message(Kind.REQUEST, rid, op, model, args or {}, tuple(arrays)))
        except BaseException:
            self._answered(rid)
            raise
        return fut

    def _destination(self, kind: Kind, rid: int, nbytes: int) -> np.ndarray | None:
        """The decoder asks where a payload goes: the caller's array, if the reply to
        `rid` is still awaited and of exactly its size."""
        into = self._pending.get(rid, (None, None, None))[2]
        if kind != Kind.REPLY or into is None or into.nbytes != nbytes:
            return None
        return into.reshape(-1).view(np.uint8)

    def _expire(self, rid: int, op: str, model: str, timeout: float) -> None:
        fut = self._answered(rid)
        if fut is not None:
            fut.set_exception(RequestTimeoutError(
                f"no reply from {self.server_name or self.peername} within {timeout:g}s; the "
                "server may be overloaded or stuck (raise PSF_REQUEST_TIMEOUT for big requests)",
                model=model or None, op=op, shard=self.server_name or None))


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
