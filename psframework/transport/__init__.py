"""asyncio transport over TCP: framing, handshake, request ids, backpressure, timeouts."""

from psframework.transport.connection import (
    ClientConnection, ServerConnection, Traffic, connect, serve,
)
from psframework.transport.loop import new_event_loop, run

__all__ = ["ClientConnection", "ServerConnection", "Traffic", "connect", "serve", "new_event_loop", "run"]
