"""asyncio transport over TCP: framing, handshake, request ids, backpressure, timeouts."""

from psframework.transport.client import ClientConnection, NotSent, connect
from psframework.transport.loop import new_event_loop, run
from psframework.transport.peer import Traffic
from psframework.transport.server import PREAUTH_LIMITS, ServerConnection, serve

__all__ = ["ClientConnection", "ServerConnection", "Traffic", "NotSent", "PREAUTH_LIMITS",
           "connect", "serve", "new_event_loop", "run"]
