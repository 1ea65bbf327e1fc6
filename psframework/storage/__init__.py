"""Storage: table descriptions, partitioners, initializers and push aggregation."""

from psframework.storage import init
from psframework.storage.partitioner import Partitioner
from psframework.storage.table import BUILTIN_AGGREGATORS, Partition, TableSpec

__all__ = ["init", "BUILTIN_AGGREGATORS", "Partitioner", "Partition", "TableSpec"]
