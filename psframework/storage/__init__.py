"""Storage: table descriptions, partitioners, initializers and push aggregation."""

from psframework.storage import init
from psframework.storage.aggregate import BUILTIN as AGGREGATORS
from psframework.storage.partitioner import Partitioner
from psframework.storage.table import Partition, TableSpec

__all__ = ["init", "AGGREGATORS", "Partitioner", "Partition", "TableSpec"]
