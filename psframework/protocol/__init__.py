"""Sans-IO wire protocol: frames and the handshake. Imports nothing from transport,
asyncio, sockets or models."""

from psframework.protocol.frames import (
    DTYPES, FrameDecoder, Kind, Limits, Message, OversizedFrame, encode,
)
from psframework.protocol.handshake import PROTOCOL_VERSION, ClientHandshake, ServerHandshake

__all__ = ["DTYPES", "FrameDecoder", "Kind", "Limits", "Message", "OversizedFrame", "encode",
           "PROTOCOL_VERSION", "ClientHandshake", "ServerHandshake"]
