"""asyncio transport over TCP: framing, handshake, request ids, backpressure, timeouts."""

from psframework.transport.connection import (
    PREAUTH_LIMITS, ClientConnection, NotSent, ServerConnection, Traffic, connect, serve,
)
from psframework.transport.loop import new_event_loop, run

__all__ = ["ClientConnection", "ServerConnection", "Traffic", "NotSent", "PREAUTH_LIMITS",
           "connect", "serve", "new_event_loop", "run"]
