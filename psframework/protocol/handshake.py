"""The versioned handshake that opens every connection, as two small state machines.

    client                                   server
    HELLO {version, nonce_c}          ->
                                      <-     HELLO {version, nonce_s, auth, limits, name}
    (only when the server has a secret)
    AUTH  {mac = H(secret, "client" | nonce_s | nonce_c)}  ->
                                      <-     WELCOME {mac = H(secret, "server" | nonce_c | nonce_s)}

H is HMAC-SHA256. Both sides prove the secret over fresh nonces, so neither a replayed
exchange nor a server without the secret passes. A side that refuses raises AuthError or
ProtocolError; the server side's caller sends that error to the peer before closing.
Secrets never cross the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from psframework.errors import AuthError, ProtocolError
from psframework.protocol.frames import Kind, Limits, Message

__all__ = ["PROTOCOL_VERSION", "ClientHandshake", "ServerHandshake"]

PROTOCOL_VERSION = 1
NONCE_BYTES = 16


def _mac(secret: bytes, role: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(secret, role + a + b, hashlib.sha256).digest()


def _mac_matches(expected: bytes, args: dict) -> bool:
    # Only bytes count: bytes(n) of a peer's integer would allocate n bytes before auth.
    mac = args.get("mac")
    return isinstance(mac, bytes) and hmac.compare_digest(expected, mac)


def _nonce(args: dict, who: str) -> bytes:
    n = args.get("nonce")
    if not isinstance(n, bytes) or len(n) != NONCE_BYTES:
        raise ProtocolError(f"{who} sent a handshake without a valid nonce")
    return n


def _version(args: dict, who: str) -> None:
    v = args.get("version")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{who} speaks psframework protocol version {v!r}, this side speaks "
            f"{PROTOCOL_VERSION}; run the same psframework release on clients and servers")


class ClientHandshake:
    """Drives the client side. `start()` gives the first message; feed every reply to
    `receive()`, which returns the next message to send (or None) until `done`."""

    def __init__(self, secret: bytes | None = None, nonce: bytes | None = None) -> None:
        self.secret = secret or None
        self.nonce = nonce or os.urandom(NONCE_BYTES)
        self.done = False
        self.server_nonce = b""
        self.server_name = ""
        self.server_limits = Limits()

    def start(self) -> Message:
        return Message(Kind.HELLO, args={"version": PROTOCOL_VERSION, "nonce": self.nonce})

    def receive(self, msg: Message) -> Message | None:
        if msg.kind == Kind.ERROR:
            from psframework.errors import error_from_wire
            raise error_from_wire(msg.args)
        if msg.kind == Kind.HELLO and not self.server_nonce:
            _version(msg.args, "the server")
            self.server_nonce = _nonce(msg.args, "the server")
            self.server_name = str(msg.args.get("name", ""))
            lim = msg.args.get("limits") or {}
            try:
                self.server_limits = Limits(**{k: int(v) for k, v in lim.items()})
            except (TypeError, ValueError, AttributeError):
                raise ProtocolError(f"the server sent invalid limits {lim!r}") from None
            wants_auth = bool(msg.args.get("auth"))
            if wants_auth and not self.secret:
                raise AuthError(
                    f"server {self.server_name or ''} requires a shared secret; pass secret= "
                    "or set PSF_SECRET to the cluster's secret")
            if not wants_auth and self.secret:
                raise AuthError(
                    f"server {self.server_name or ''} runs without a secret but this client "
                    "has one; start the servers with the same --secret / PSF_SECRET")
            if self.secret is None:  # then the server wants no proof either (checked above)
                self.done = True
                return None
            return Message(Kind.AUTH, args={
                "mac": _mac(self.secret, b"client", self.server_nonce, self.nonce)})
        if msg.kind == Kind.WELCOME and self.server_nonce and self.secret:
            expected = _mac(self.secret, b"server", self.nonce, self.server_nonce)
            if not _mac_matches(expected, msg.args):
                raise AuthError("the server could not prove the shared secret; is PSF_SECRET "
                                "the same on this client and the cluster?")
            self.done = True
            return None
        raise ProtocolError(f"unexpected {msg.kind.name} message during the handshake")


class ServerHandshake:
    """Drives the server side: feed each client message to `receive()`, send what it
    returns, and stop when `done`. Raises AuthError / ProtocolError to refuse."""

    def __init__(self, secret: bytes | None, limits: Limits, name: str = "",
                 nonce: bytes | None = None) -> None:
        self.secret = secret or None
        self.limits = limits
        self.name = name
        self.nonce = nonce or os.urandom(NONCE_BYTES)
        self.client_nonce = b""
        self.done = False

    def receive(self, msg: Message) -> list[Message]:
        if msg.kind == Kind.HELLO and not self.client_nonce:
            _version(msg.args, "the client")
            self.client_nonce = _nonce(msg.args, "the client")
            hello = Message(Kind.HELLO, args={
                "version": PROTOCOL_VERSION, "nonce": self.nonce, "auth": self.secret is not None,
                "name": self.name, "limits": {"max_frame_bytes": self.limits.max_frame_bytes,
                                              "max_header_bytes": self.limits.max_header_bytes}})
            self.done = self.secret is None
            return [hello]
        if msg.kind == Kind.AUTH and self.client_nonce and self.secret and not self.done:
            expected = _mac(self.secret, b"client", self.nonce, self.client_nonce)
            if not _mac_matches(expected, msg.args):
                raise AuthError("wrong shared secret; set PSF_SECRET to the cluster's secret")
            self.done = True
            return [Message(Kind.WELCOME, args={
                "mac": _mac(self.secret, b"server", self.client_nonce, self.nonce)})]
        if self.secret and not self.done and msg.kind != Kind.HELLO:
            raise AuthError("this server requires a shared secret before any request; "
                            "pass secret= or set PSF_SECRET")
        raise ProtocolError(f"unexpected {msg.kind.name} message during the handshake")
