"""Handles: small picklable descriptions of a table that act on it through this process's
client (`get_client`), so they can travel in Spark closures and reconnect lazily."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from psframework.client.sync import get_client

__all__ = ["BigMatrix", "BigVector"]


@dataclass(frozen=True)
class _Handle:
    master: str
    model: str
    table: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def client(self):
        return get_client(self.master)

    def destroy(self) -> bool:
        """Destroy the whole model this table belongs to."""
        return self.client.destroy(self.model)

    def save(self, path: str) -> str:
        """Save the whole model this table belongs to under `path`."""
        return self.client.save(self.model, path)


class BigMatrix(_Handle):
    """A dense matrix on the parameter server."""

    def pull_rows(self, rows: Any) -> np.ndarray:
        return self.client.pull_rows(self.model, self.table, rows)

    def pull(self, rows: Any, cols: Any) -> np.ndarray:
        return self.client.pull(self.model, self.table, rows, cols)

    def push_rows(self, rows: Any, values: Any) -> None:
        self.client.push_rows(self.model, self.table, rows, values)

    def push(self, rows: Any, cols: Any, values: Any) -> None:
        self.client.push(self.model, self.table, rows, cols, values)

    def to_numpy(self) -> np.ndarray:
        """The whole matrix (split into frame-sized requests)."""
        return self.pull_rows(np.arange(self.shape[0]))


class BigVector(_Handle):
    """A dense vector on the parameter server."""

    def pull(self, idx: Any) -> np.ndarray:
        return self.client.pull_rows(self.model, self.table, idx)

    def push(self, idx: Any, values: Any) -> None:
        self.client.push_rows(self.model, self.table, idx, values)

    def to_numpy(self) -> np.ndarray:
        return self.pull(np.arange(self.shape[0]))
