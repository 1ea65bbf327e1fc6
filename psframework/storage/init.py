"""Initializers: how a new table's values are made.

A seeded initializer fills value (row, col) identically however the table is partitioned:
rows are drawn in fixed blocks of BLOCK_ROWS full-width rows, each block from its own
generator seeded by (seed, block), and every partition takes its own rows and columns
out of the blocks it touches. So a model over 3 shards starts where it would over one.
"""

from __future__ import annotations

import numbers

import numpy as np

from psframework.errors import ConfigError
from psframework.storage.partitioner import Partitioner

__all__ = ["zeros", "constant", "uniform", "normal", "validate", "materialize", "BLOCK_ROWS"]

BLOCK_ROWS = 1024
KINDS = ("zeros", "constant", "uniform", "normal")


def zeros() -> dict:
    return {"kind": "zeros"}


def constant(value: float) -> dict:
    """Every value `value` (an int stays an int, so int64 tables get it exactly)."""
    return validate({"kind": "constant", "value": value})


def uniform(low: float = -0.5, high: float = 0.5, seed: int = 0) -> dict:
    return validate({"kind": "uniform", "low": low, "high": high, "seed": seed})


def normal(mean: float = 0.0, std: float = 0.01, seed: int = 0) -> dict:
    return validate({"kind": "normal", "mean": mean, "std": std, "seed": seed})


_PARAMS = {"zeros": (), "constant": ("value",), "uniform": ("low", "high"),
           "normal": ("mean", "std")}


def validate(spec: dict, dtype: str | None = None) -> dict:
    """Raise ConfigError unless `spec` is one the helpers above could have made (and,
    given the table's dtype, one whose values that dtype holds), so a bad initializer is
    refused before any shard tries to materialize it."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"initializer must be one of {KINDS} (see psframework.init), got {spec!r}")
    for name in _PARAMS[kind]:
        v = spec.get(name)
        if (not isinstance(v, numbers.Real) or isinstance(v, bool)
                or abs(v) > 1e300  # type: ignore[operator]  # typeshed's Real has no ordering
                or not np.isfinite(float(v))):
            raise ConfigError(f"{kind} initializer needs a finite number {name!r}, got {spec!r}; "
                              f"build it with psframework.init.{kind}()")
    if kind == "normal" and spec["std"] < 0:
        raise ConfigError(f"normal initializer needs std >= 0, got {spec!r}")
    if kind == "uniform" and spec["low"] > spec["high"]:
        raise ConfigError(f"uniform initializer needs low <= high, got {spec!r}")
    seed = spec.get("seed", 0)
    if (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
            or not 0 <= seed < 2**63):  # type: ignore[operator]  # typeshed's Integral has no ordering
        raise ConfigError(f"initializer seed must be a non-negative 64-bit integer, got {spec!r}")
    if kind == "constant" and dtype is not None:
        _representable(spec["value"], np.dtype(dtype))
    return spec


def _representable(value: float, dtype: np.dtype) -> None:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if value != int(value) or not info.min <= int(value) <= info.max:
            raise ConfigError(f"constant {value!r} does not fit a {dtype} table")
    else:
        with np.errstate(over="ignore"):
            if not np.isfinite(np.asarray(value, dtype=np.float64).astype(dtype)):
                raise ConfigError(f"constant {value!r} overflows a {dtype} table")


def _block(spec: dict, block: int, rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng([int(spec.get("seed", 0)), block])
    if spec["kind"] == "uniform":
        return rng.uniform(spec["low"], spec["high"], size=(rows, cols))
    return rng.normal(spec["mean"], spec["std"], size=(rows, cols))


def materialize(spec: dict, shape: tuple[int, ...], dtype: np.dtype, axis: int,
                partitioner: Partitioner, part: int) -> np.ndarray:
    """The array partition `part` holds. `axis` 0 partitions rows, 1 columns."""
    nrows = shape[0]
    ncols = shape[1] if len(shape) == 2 else 1
    held = partitioner.indices(part)
    local_shape = list(shape)
    local_shape[axis] = partitioner.size(part)
    kind = spec["kind"]
    if kind == "zeros":
        return np.zeros(local_shape, dtype=dtype)
    if kind == "constant":
        return np.full(local_shape, spec["value"], dtype=dtype)
    out = np.empty((local_shape[0], ncols if axis == 0 else local_shape[1]), dtype=dtype)
    global_rows = np.arange(nrows)[held] if axis == 0 else np.arange(nrows)
    col_sel = slice(None) if axis == 0 else held
    # global_rows is increasing, so each block's rows are one run of it: found by
    # searchsorted, not by a mask over all rows per block (quadratic for tall tables)
    for b in np.unique(global_rows // BLOCK_ROWS):
        lo = int(b) * BLOCK_ROWS
        hi = min(lo + BLOCK_ROWS, nrows)
        first, last = np.searchsorted(global_rows, [lo, hi])
        values = _block(spec, int(b), hi - lo, ncols)
        out[first:last] = values[global_rows[first:last] - lo][:, col_sel]
    return out.reshape(local_shape)
