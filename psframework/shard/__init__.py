"""The shard server."""

from psframework.shard.server import Shard

__all__ = ["Shard"]
