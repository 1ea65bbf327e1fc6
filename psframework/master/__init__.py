"""The master: servers, heartbeats, the model catalog and placement."""

from psframework.master.server import Master

__all__ = ["Master"]
