"""What the master knows: the servers (with what they report) and the models (with
where their partitions are); whether a new model fits in the shards' memory; what a
shard that registers again must drop; and the checks on names and paths clients send."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from psframework.errors import ConfigError
from psframework.master.messages import Hosted, ShardStats
from psframework.storage import memory
from psframework.storage.table import TableSpec

__all__ = ["ServerInfo", "ModelEntry", "budget", "check_memory", "reconcile", "model_name",
           "save_directory", "differences"]

log = logging.getLogger("psframework.master")


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
    placement: list[str]  # the primary's shard name per partition index
    # one incarnation of the name: a client holding an old lookup is refused by the shards
    uid: str = field(default_factory=lambda: secrets.token_hex(8))
    replicas: int = 1  # copies of each partition: the primary and replicas - 1 backups
    backups: list[list[str]] = field(default_factory=list)  # per partition
    checkpoint_interval: float | None = None  # seconds; None: the cluster's setting
    checkpoint: dict | None = None  # the latest complete one: path, save_id, time, pause
    recoveries: int = 0  # partitions failed over (promoted or restored)
    lost: list[int] = field(default_factory=list)  # partitions with no copy left
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.backups:
            self.backups = [[] for _ in self.placement]

    def parts_on(self, shard: str) -> list[int]:
        """Partitions whose primary is on `shard`."""
        return [p for p, s in enumerate(self.placement) if s == shard]

    def hosted_on(self, shard: str) -> list[int]:
        """Partitions `shard` holds a copy of, as primary or backup."""
        return [p for p, s in enumerate(self.placement) if s == shard or shard in self.backups[p]]

    def shards(self) -> list[str]:
        """Every shard holding a copy of a partition, sorted."""
        return sorted({*self.placement, *(b for bs in self.backups for b in bs)})

    def degraded(self) -> list[int]:
        """Partitions with fewer copies than `replicas` (their backups are being built)."""
        return [p for p, bs in enumerate(self.backups)
                if p not in self.lost and len(bs) < self.replicas - 1]

    def bytes_on(self, shard: str) -> int:
        return memory.partition_bytes(self.tables, self.hosted_on(shard))

    def describe(self, servers: dict[str, ServerInfo]) -> dict:
        shards = self.shards()
        return {
            "name": self.name, "uid": self.uid, "type": self.type, "config": self.config,
            "tables": [t.to_wire() for t in self.tables], "placement": self.placement,
            "servers": {s: servers[s].address for s in shards if s in servers},
            "alive": {s: servers[s].alive for s in shards if s in servers},
            "replicas": self.replicas, "backups": self.backups, "lost": self.lost,
            "restorable": self.checkpoint is not None,
            "degraded": self.degraded(), "recoveries": self.recoveries,
            "checkpoint": None if self.checkpoint is None else {
                **self.checkpoint, "age": round(time.time() - self.checkpoint["time"], 3)},
        }

    def to_state(self) -> dict:
        """Everything a restarted master needs to know about this model."""
        return {"name": self.name, "type": self.type, "config": self.config,
                "tables": [t.to_wire() for t in self.tables], "placement": self.placement,
                "uid": self.uid, "replicas": self.replicas, "backups": self.backups,
                "checkpoint_interval": self.checkpoint_interval, "checkpoint": self.checkpoint,
                "recoveries": self.recoveries, "lost": self.lost, "created": self.created}

    @classmethod
    def from_state(cls, d: dict) -> "ModelEntry":
        return cls(**{**d, "tables": [TableSpec.from_wire(t) for t in d["tables"]]})


def budget(shard: str, servers: dict[str, ServerInfo]) -> tuple[int | None, str]:
    """How many bytes of partitions `shard` may hold, and why: its memory_limit, else
    its share of half its machine's memory (None: the shard did not say)."""
    info = servers[shard]
    if info.memory_limit is not None:
        return info.memory_limit, "its memory_limit"
    if not info.memory:
        return None, ""
    peers = sum(1 for s in servers.values() if s.alive and s.machine == info.machine)
    share = int(info.memory * memory.DEFAULT_SHARE / max(peers, 1))
    return share, (f"half of its machine's {info.memory / 1e9:.1f} GB of memory, shared by "
                   f"{peers} shard{'s' * (peers > 1)}; set PSF_MEMORY_LIMIT on the shards "
                   "to change it")


def check_memory(entry: ModelEntry, servers: dict[str, ServerInfo],
                 models: Iterable[ModelEntry]) -> None:
    """ConfigError unless every shard of `entry` can hold its partitions beside what the
    catalog already places there."""
    models = list(models)
    for shard in sorted(set(entry.placement)):
        limit, why = budget(shard, servers)
        if limit is not None:
            memory.refuse_over(entry.name, shard, sum(m.bytes_on(shard) for m in models),
                               entry.bytes_on(shard), limit, why)


def reconcile(shard: str, hosts: dict[str, Hosted], models: dict[str, ModelEntry],
              installing: set[str]) -> dict[str, list[int] | None]:
    """What a registering shard must drop of what it `hosts`: models the catalog does not
    know (destroyed or re-created meanwhile; None: the whole model), and partitions it
    places elsewhere — models being installed right now aside. Partitions the catalog
    places on the shard that it lacks are lost, and said so."""
    drop: dict[str, list[int] | None] = {}
    for model, hosted in hosts.items():
        entry = models.get(model)
        if hosted.uid in installing:
            continue
        if entry is None or entry.uid != hosted.uid:
            drop[model] = None
        elif extra := sorted(set(hosted.parts) - set(entry.hosted_on(shard))):
            drop[model] = extra
    for entry in models.values():
        report = hosts.get(entry.name)
        held = report.parts if report is not None and report.uid == entry.uid else ()
        if lost := sorted(set(entry.hosted_on(shard)) - set(held)):
            log.error("shard %s came back without partitions %s of model %s: they are "
                      "lost; load a saved copy", shard, lost, entry.name)
    return drop


def model_name(name: str) -> str:
    if not name or len(name) > 256 or not name.isprintable():
        raise ConfigError(f"a model needs a name of 1 to 256 printable characters, got {name!r}")
    return name


def save_directory(path: object) -> Path:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"save and load need a directory path, got {path!r}")
    return Path(path).resolve()


def differences(have: dict, want: dict) -> str:
    keys = sorted(k for k in {*have, *want} if have.get(k) != want.get(k))
    return ", ".join(f"{k}={_short(have.get(k))} (asked: {_short(want.get(k))})"
                     for k in keys[:3]) or "another config"


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
