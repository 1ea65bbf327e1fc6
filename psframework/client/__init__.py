"""Clients: the async core (`core`), and the synchronous facade with its picklable
handles (`sync`), which is built on it."""

from psframework.client.core import AsyncClient, ModelInfo
from psframework.client.sync import BigMatrix, BigVector, Client, get_client

__all__ = ["AsyncClient", "ModelInfo", "BigMatrix", "BigVector", "Client", "get_client"]
