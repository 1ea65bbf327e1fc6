"""What the master knows: the servers (with what they report) and the models (with
where their partitions are), and whether a new model fits in the shards' memory."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Iterable

from psframework.errors import ConfigError
from psframework.master.messages import ShardStats
from psframework.storage.table import TableSpec

__all__ = ["ServerInfo", "ModelEntry", "budget", "check_memory", "DEFAULT_MEMORY_SHARE"]

DEFAULT_MEMORY_SHARE = 0.5  # of a machine's memory, for the shards on it, unless they set a limit


@dataclass
class ServerInfo:
    name: str
    address: str
    last_seen: float
    alive: bool = True
    stats: ShardStats = field(default_factory=ShardStats)
    machine: str = ""
    memory: int = 0
    memory_limit: int | None = None


@dataclass
class ModelEntry:
    name: str
    type: str
    config: dict
    tables: list[TableSpec]
    placement: list[str]  # shard name per partition index
    # one incarnation of the name: a client holding an old lookup is refused by the shards
    uid: str = field(default_factory=lambda: secrets.token_hex(8))

    def parts_on(self, shard: str) -> list[int]:
        return [p for p, s in enumerate(self.placement) if s == shard]

    def bytes_on(self, shard: str) -> int:
        return sum(t.part_bytes(p) for p in self.parts_on(shard) for t in self.tables
                   if p < t.parts)

    def describe(self, servers: dict[str, ServerInfo]) -> dict:
        return {
            "name": self.name, "uid": self.uid, "type": self.type, "config": self.config,
            "tables": [t.to_wire() for t in self.tables], "placement": self.placement,
            "servers": {s: servers[s].address for s in set(self.placement) if s in servers},
            "alive": {s: servers[s].alive for s in set(self.placement) if s in servers},
        }


def budget(shard: str, servers: dict[str, ServerInfo]) -> tuple[int | None, str]:
    """How many bytes of partitions `shard` may hold, and why: its memory_limit, else
    its share of half its machine's memory (None: the shard did not say)."""
    info = servers[shard]
    if info.memory_limit is not None:
        return info.memory_limit, "its memory_limit"
    if not info.memory:
        return None, ""
    peers = sum(1 for s in servers.values() if s.alive and s.machine == info.machine)
    share = int(info.memory * DEFAULT_MEMORY_SHARE / max(peers, 1))
    return share, (f"half of its machine's {_gb(info.memory)} of memory, shared by "
                   f"{peers} shard{'s' * (peers > 1)}; set PSF_MEMORY_LIMIT on the shards "
                   "to change it")


def check_memory(entry: ModelEntry, servers: dict[str, ServerInfo],
                 models: Iterable[ModelEntry]) -> None:
    """ConfigError unless every shard of `entry` can hold its partitions beside what the
    catalog already places there."""
    models = list(models)
    for shard in sorted(set(entry.placement)):
        limit, why = budget(shard, servers)
        if limit is None:
            continue
        held = sum(m.bytes_on(shard) for m in models)
        need = entry.bytes_on(shard)
        if held + need > limit:
            raise ConfigError(
                f"model {entry.name!r} needs {_gb(need)} on shard {shard}, which holds "
                f"{_gb(held)} of its {_gb(limit)} ({why}); make the model smaller, "
                "destroy others or add shards", model=entry.name, shard=shard)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
