"""The `rsvd` model on the parameter server: the tall-and-skinny matrices of Halko et
al.'s randomized SVD of a sparse m × n matrix A, which itself never comes here (it stays
where its rows live: a Spark partition, a worker's slice).

Tables, both float64 with `width` = k + oversample columns, rows split in ranges:
- `right` (n × width, add): starts as the Gaussian test matrix Ω (seeded by rows, so the
  same however many shards hold it); then holds Aᵀ·Q, which the row blocks of A add
  their partial products into; orthonormalized it is Q_n; at the end V (first k columns).
- `left` (m × width, replace): each row block writes its own rows of Y = A·Ω (or A·Q_n);
  orthonormalized it is Q; at the end U (first k columns).

Server ops (each a write, so backups of a replicated partition run them too, on the same
input, to the same result):
- `qr`: QR-factor this partition's rows where they are (`models.rsvd.tsqr`, in chunks),
  keep Q in place and return the small R (TSQR's first level);
- `multiply`: replace this partition's rows X by X·M for a small M (TSQR's update of the
  Q blocks; the final rotation into singular vectors);
- `zero`: every value 0 (before a pass of Aᵀ adds into `right`);
- `extremes` (a read): per column, the partition's entry of largest magnitude.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from psframework import ConfigError, Model, ShapeError, TableSpec, init, udf
from models.rsvd import tsqr

__all__ = ["RSVDPlugin", "LEFT", "RIGHT"]

LEFT, RIGHT = "left", "right"


def _positive(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"rsvd config {key} must be a positive integer, got {value!r}")
    return value


class RSVDPlugin(Model):
    """config: rows (m >= 1), cols (n >= 1), width (k + oversample, >= 1), seed (of Ω)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        for key in ("rows", "cols", "width"):
            _positive(self.config, key)
        seed = self.config.setdefault("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"rsvd config seed must be an integer, got {seed!r}")

    def tables(self) -> list[TableSpec]:
        c = self.config
        return [TableSpec(RIGHT, (c["cols"], c["width"]), "float64", aggregate="add",
                          init=init.normal(0.0, 1.0, c["seed"])),
                TableSpec(LEFT, (c["rows"], c["width"]), "float64", aggregate="replace")]

    @staticmethod
    def _data(view, args) -> np.ndarray:
        table = args.get("table")
        if table not in (LEFT, RIGHT):
            raise ConfigError(f"rsvd ops take table {LEFT!r} or {RIGHT!r}, got {table!r}")
        return view.table(table).data

    @udf(threaded=True)
    def qr(self, view, args, arrays):
        """Q of this partition's rows in place (zero columns beyond its rank r =
        min(rows, width)); returns R (r × width)."""
        return {}, (tsqr.qr_in_place(self._data(view, args)),)

    @udf(threaded=True)
    def multiply(self, view, args, arrays):
        """This partition's rows X ← X[:, :r] · M, for arrays[0] = M (r × width, float64)
        with r <= width."""
        data = self._data(view, args)
        if (len(arrays) != 1 or arrays[0].dtype != np.float64 or arrays[0].ndim != 2
                or arrays[0].shape[1] != data.shape[1] or arrays[0].shape[0] > data.shape[1]):
            raise ShapeError(f"multiply takes one float64 matrix of at most {data.shape[1]} "
                             f"rows and {data.shape[1]} columns")
        m = arrays[0]
        for first in range(0, data.shape[0], tsqr.CHUNK_ROWS):  # bounded temporaries
            chunk = data[first:first + tsqr.CHUNK_ROWS]
            chunk[:] = chunk[:, :m.shape[0]] @ m
        return {}, ()

    @udf(threaded=True, read=True)
    def extremes(self, view, args, arrays):
        """Per column, this partition's entry of largest magnitude (its sign decides
        scikit-learn's svd_flip)."""
        data = self._data(view, args)
        return {}, (data[np.abs(data).argmax(axis=0), np.arange(data.shape[1])],)

    @udf
    def zero(self, view, args, arrays):
        """Every value of the table 0."""
        self._data(view, args)[:] = 0.0
        return {}, ()
