"""Tables and the partitions a shard holds of them.

A `TableSpec` is the cheap, serializable description of a dense matrix (rows × cols) or
vector (n,): dtype, how it is split (by rows or by columns, range or cyclic, into how many
partitions), how it starts (an initializer) and how pushes combine (an aggregator name).
A `Partition` is one piece of a table as a numpy array, with bounds- and dtype-checked
pulls and pushes in local coordinates.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Callable

import numpy as np

from psframework.errors import ConfigError, DTypeError, ShapeError
from psframework.storage import init
from psframework.storage.partitioner import PARTITIONERS, Partitioner

__all__ = ["TableSpec", "Partition", "TABLE_DTYPES", "MAX_PARTS"]

TABLE_DTYPES = ("float32", "float64", "int32", "int64")
#: Partitions per table at most: the placement travels in every lookup's reply header.
MAX_PARTS = 4096
MAX_SIDE = 1 << 48  # rows or columns at most: beyond any memory, and safe in int64 offsets
#: The built-in aggregators (their kernels are in storage.aggregate, which needs numba
#: and is imported only where pushes are applied: clients never load numba).
BUILTIN_AGGREGATORS = ("add", "min", "max", "replace")


@dataclass(frozen=True)
class TableSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    partition_by: str = "rows"
    partitioner: str = "range"
    parts: int = 0  # 0: one partition per shard, decided when the model is placed
    init: dict = field(default_factory=init.zeros)
    aggregate: str = "add"
    allow_nonfinite: bool = False  # accept NaN and ±inf in pushes (refused by default)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "shape", tuple(operator.index(s) for s in self.shape))
        except (TypeError, ValueError):
            raise ConfigError(f"table {self.name!r}: shape must be (rows,) or (rows, cols), "
                              f"got {self.shape!r}") from None
        try:
            object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        except (TypeError, ValueError, SyntaxError):  # numpy's parser raises all three
            raise ConfigError(f"table {self.name!r}: dtype must be one of {TABLE_DTYPES}, "
                              f"got {self.dtype!r}") from None

    def validate(self, aggregators: dict[str, Callable] | None = None) -> "TableSpec":
        """Raise ConfigError naming what is wrong; return self when all is well."""
        where = f"table {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("a table needs a non-empty name")
        if len(self.shape) not in (1, 2) or any(s < 1 or s > MAX_SIDE for s in self.shape):
            raise ConfigError(f"{where}: shape must be (rows,) or (rows, cols) of sizes 1 to "
                              f"2^48, got {self.shape}")
        if self.dtype not in TABLE_DTYPES:
            raise ConfigError(f"{where}: dtype must be one of {TABLE_DTYPES}, got {self.dtype}")
        if self.partition_by not in ("rows", "cols"):
            raise ConfigError(f"{where}: partition_by must be 'rows' or 'cols'")
        if self.partition_by == "cols" and len(self.shape) != 2:
            raise ConfigError(f"{where}: only matrices can be partitioned by columns")
        if self.partitioner not in PARTITIONERS:
            raise ConfigError(f"{where}: partitioner must be one of {PARTITIONERS}")
        if not isinstance(self.parts, int) or not 0 <= self.parts <= min(self.shape[self.axis],
                                                                           MAX_PARTS):
            raise ConfigError(f"{where}: parts must be between 1 and "
                              f"{min(self.shape[self.axis], MAX_PARTS)} (0 for one per shard), "
                              f"got {self.parts!r}")
        if not isinstance(self.allow_nonfinite, bool):
            raise ConfigError(f"{where}: allow_nonfinite must be true or false")
        init.validate(self.init, self.dtype)
        known = {*BUILTIN_AGGREGATORS, *(aggregators or {})}
        if not isinstance(self.aggregate, str) or self.aggregate not in known:
            raise ConfigError(f"{where}: unknown aggregator {self.aggregate!r}; "
                              f"choose one of {sorted(known)}")
        return self

    @property
    def axis(self) -> int:
        return 0 if self.partition_by == "rows" else 1

    @property
    def is_vector(self) -> bool:
        return len(self.shape) == 1

    @property
    def cols(self) -> int:
        return self.shape[1] if len(self.shape) == 2 else 1

    def placed(self, parts: int) -> "TableSpec":
        return self if self.parts else replace(
            self, parts=min(parts, self.shape[self.axis], MAX_PARTS))

    def part_shape(self, part: int) -> tuple[int, ...]:
        """The shape of the array partition `part` holds."""
        shape = list(self.shape)
        shape[self.axis] = self.split().size(part)
        return tuple(shape)

    def part_bytes(self, part: int) -> int:
        """Bytes partition `part` holds."""
        return int(np.prod(self.part_shape(part))) * np.dtype(self.dtype).itemsize

    def row_bytes(self, part: int) -> int:
        """Bytes one row (a vector: one element) of partition `part` holds."""
        width = self.part_shape(part)[1] if len(self.shape) == 2 else 1
        return width * np.dtype(self.dtype).itemsize

    def nonfinite_error(self) -> DTypeError:
        return DTypeError(f"NaN or infinite values cannot go into table {self.name!r}; "
                          "create it with allow_nonfinite=True if they are meant")

    @cached_property
    def _partitioner(self) -> Partitioner:
        return Partitioner(self.partitioner, self.shape[self.axis], self.parts)

    def split(self) -> Partitioner:
        """The partitioner of the partitioned axis (made once per spec)."""
        return self._partitioner

    def to_wire(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_wire(cls, d: dict) -> "TableSpec":
        try:
            return cls(**{**d, "shape": tuple(d["shape"])})
        except (TypeError, KeyError, ValueError) as e:
            raise ConfigError(f"invalid table description {d!r}: {e}") from None


class Partition:
    """Partition `part` of a table on this shard, addressed in local coordinates:
    local rows for a row partition, local columns for a column partition."""

    __slots__ = ("spec", "part", "data", "combine")

    def __init__(self, spec: TableSpec, part: int, data: np.ndarray, combine: Callable) -> None:
        self.spec = spec
        self.part = part
        self.data = data
        self.combine = combine

    @classmethod
    def create(cls, spec: TableSpec, part: int, combine: Callable) -> "Partition":
        data = init.materialize(spec.init, spec.shape, np.dtype(spec.dtype), spec.axis,
                                spec.split(), part)
        return cls(spec, part, data, combine)

    def _index(self, idx: np.ndarray, axis: int, what: str) -> np.ndarray:
        """`idx` checked and as int64: one index dtype, so no kernel ever meets a new one."""
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ShapeError(f"{what} must be a 1-d integer array, got {idx.dtype}{list(idx.shape)}")
        n = self.data.shape[axis]
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ShapeError(f"{what} out of range for partition {self.part} of "
                             f"{self.spec.name!r} ({n} {what})")
        return idx.astype(np.int64, copy=False)

    def _values(self, values: np.ndarray, shape: tuple) -> np.ndarray:
        if values.dtype != self.data.dtype:
            raise DTypeError(f"values are {values.dtype} but table {self.spec.name!r} holds "
                             f"{self.data.dtype}; cast them before pushing")
        if values.shape != shape:
            raise ShapeError(f"values have shape {list(values.shape)}, expected {list(shape)} "
                             f"for table {self.spec.name!r}")
        if values.dtype.kind == "f" and not self.spec.allow_nonfinite:
            from psframework.storage.aggregate import finite
            if not finite(values):
                raise self.spec.nonfinite_error()
        return values

    def pull_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.data[self._index(rows, 0, "rows")]

    def pull_elems(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rows = self._index(rows, 0, "rows")
        if self.data.ndim == 1:
            return self.data[rows]
        cols = self._index(cols, 1, "cols")
        if rows.shape != cols.shape:
            raise ShapeError("rows and cols must have the same length")
        return self.data[rows, cols]

    def push_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        rows = self._index(rows, 0, "rows")
        self._values(values, (rows.size,) + self.data.shape[1:])
        from psframework.storage.aggregate import scatter_rows
        scatter_rows(self.data, rows, values, self.combine)

    def push_elems(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        if self.data.ndim == 1:
            return self.push_rows(rows, values)
        rows = self._index(rows, 0, "rows")
        cols = self._index(cols, 1, "cols")
        if rows.shape != cols.shape:
            raise ShapeError("rows and cols must have the same length")
        self._values(values, rows.shape)
        from psframework.storage.aggregate import scatter_elems
        scatter_elems(self.data, rows, cols, values, self.combine)
