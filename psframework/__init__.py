"""psframework: a parameter server in pure Python on asyncio.

The public API. Model plugins use only what is exported here.
"""

from psframework import errors, hyper, storage
from psframework.client import AsyncClient, BigMatrix, BigVector, Client, ModelInfo, get_client
from psframework.cluster import LocalCluster
from psframework.config import Settings, load_settings
from psframework.errors import (
    AuthError, ConfigError, ConnectionLostError, DTypeError, ExecutorEnvironmentError,
    ModelExistsError, ProtocolError, MovedError, PSError, RemoteError, RequestTimeoutError,
    ShapeError, StaleRequestError, StorageError, UnknownModelError,
)
from psframework.hyper import Hyper, HyperSpec
from psframework.model import Model, ShardView, udf
from psframework.storage import Partition, Partitioner, TableSpec
from psframework.storage import init
from psframework.transport import run

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "Client", "ModelInfo", "BigMatrix", "BigVector", "get_client",
    "LocalCluster", "Settings", "load_settings",
    "Model", "ShardView", "udf", "Hyper", "HyperSpec", "hyper", "TableSpec", "Partition", "Partitioner", "init",
    "PSError", "ConfigError", "ExecutorEnvironmentError", "ProtocolError", "AuthError",
    "ConnectionLostError", "RequestTimeoutError", "RemoteError", "UnknownModelError",
    "MovedError", "ModelExistsError",
    "ShapeError", "DTypeError", "StorageError", "StaleRequestError", "errors", "storage", "run", "__version__",
]
