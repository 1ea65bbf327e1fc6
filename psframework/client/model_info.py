"""What a client knows of a model from the master: its tables and where its partitions'
primaries live."""

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
    lost: frozenset[int] = frozenset()  # partitions with no copy left
    restorable: bool = False  # ... which come back from a checkpoint when a shard registers

    @classmethod
    def from_wire(cls, d: dict) -> "ModelInfo":
        tables = {t["name"]: TableSpec.from_wire(t) for t in d["tables"]}
        return cls(d["name"], d["uid"], d["type"], d["config"], tables,
                   tuple(d["placement"]), dict(d["servers"]), frozenset(d.get("lost", ())),
                   bool(d.get("restorable")))

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
        """(shard, address) of partition `part`'s primary."""
        shard = self.placement[part]
        if part in self.lost:
            raise ConnectionLostError(f"partition {part} of model {self.name!r} " + (
                "has no live copy: it comes back from the model's checkpoint as soon as a "
                "shard registers (start one)" if self.restorable else
                "is lost: its shard died and it had no backup (replicas=2) and no "
                "checkpoint; load a saved copy"), model=self.name, shard=shard)
        try:
            return shard, self.servers[shard]
        except KeyError:
            raise ConnectionLostError(
                f"partition {part} of model {self.name!r} was on shard {shard}, which the "
                "master no longer knows (it died); load a saved copy of the model",
                model=self.name, shard=shard) from None
