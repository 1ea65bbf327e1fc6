"""A model as one shard hosts it: its plugin instance, its tables' specs, the
partitions placed here (as primary or backup), their write gates, and the backups of
the partitions this shard is the primary of."""

from __future__ import annotations

from dataclasses import dataclass, field

from psframework.errors import MovedError, UnknownModelError
from psframework.model import Model, ShardView
from psframework.shard.replicas import Gate
from psframework.storage.table import Partition, TableSpec

__all__ = ["HostedModel"]


@dataclass
class HostedModel:
    name: str
    uid: str
    plugin: Model
    specs: dict[str, TableSpec]
    parts: dict[int, dict[str, Partition]] = field(default_factory=dict)
    # partitions this shard is the primary of -> their backups' addresses
    backups: dict[int, list[str]] = field(default_factory=dict)
    # partitions this shard is the primary of -> backups being built -> their writes in flight
    building: dict[int, dict[str, set]] = field(default_factory=dict)
    gates: dict[int, Gate] = field(default_factory=dict)

    def gate(self, part: int) -> Gate:
        gate = self.gates.get(part)
        if gate is None:
            gate = self.gates[part] = Gate()
        return gate

    def drop(self, part: int) -> None:
        """Let go of partition `part` (its copy here, its backups, its gate); writes
        waiting at its gate go on, and find it gone."""
        self.parts.pop(part, None)
        self.backups.pop(part, None)
        gate = self.gates.pop(part, None)
        if gate is not None and not gate.is_open:
            gate.open()

    def tables_of(self, part: int) -> dict[str, Partition]:
        try:
            return self.parts[part]
        except KeyError:
            raise MovedError(f"partition {part} of model {self.name!r} is not on this shard; "
                             "look the model up again", model=self.name) from None

    def view(self, shard: str, part: int) -> ShardView:
        return ShardView(self.name, shard, part, self.tables_of(part))

    def partition(self, table: str, part: int) -> Partition:
        try:
            return self.tables_of(part)[table]
        except KeyError:
            raise UnknownModelError(f"model {self.name!r} has no table {table!r}",
                                    model=self.name) from None

    @property
    def nbytes(self) -> int:
        return sum(p.data.nbytes for tables in self.parts.values() for p in tables.values())
