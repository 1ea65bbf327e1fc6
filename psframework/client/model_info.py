"""What a client knows of a model from the master: its tables and where its partitions
live."""

from __future__ import annotations

from dataclasses import dataclass

from psframework.errors import ConnectionLostError, UnknownModelError
from psframework.storage.table import TableSpec

__all__ = ["ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """Where a model lives: its tables and the server of each partition."""

    name: str
    uid: str  # this incarnation of the name; shards refuse requests for another
    type: str
    config: dict
    tables: dict[str, TableSpec]
    placement: tuple[str, ...]
    servers: dict[str, str]

    @classmethod
    def from_wire(cls, d: dict) -> "ModelInfo":
        tables = {t["name"]: TableSpec.from_wire(t) for t in d["tables"]}
        return cls(d["name"], d["uid"], d["type"], d["config"], tables,
                   tuple(d["placement"]), dict(d["servers"]))

    @property
    def parts(self) -> int:
        return len(self.placement)

    def table(self, name: str) -> TableSpec:
        try:
            return self.tables[name]
        except KeyError:
            raise UnknownModelError(f"model {self.name!r} has no table {name!r} "
                                    f"(tables: {sorted(self.tables)})", model=self.name) from None

    def address(self, part: int) -> tuple[str, str]:
        shard = self.placement[part]
        try:
            return shard, self.servers[shard]
        except KeyError:
            raise ConnectionLostError(
                f"partition {part} of model {self.name!r} was on shard {shard}, which the "
                "master no longer knows (it died); load a saved copy of the model",
                model=self.name, shard=shard) from None
