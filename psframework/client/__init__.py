"""Clients: async core, synchronous facade and picklable handles."""

from psframework.client.core import AsyncClient, ModelInfo
from psframework.client.handles import BigMatrix, BigVector
from psframework.client.sync import Client, get_client

__all__ = ["AsyncClient", "ModelInfo", "BigMatrix", "BigVector", "Client", "get_client"]
