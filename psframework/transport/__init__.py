"""asyncio transport over TCP: framing, handshake, request ids, backpressure, timeouts."""

from psframework.transport.connection import ClientConnection, ServerConnection, connect, serve
from psframework.transport.loop import new_event_loop, run

__all__ = ["ClientConnection", "ServerConnection", "connect", "serve", "new_event_loop", "run"]
