"""The master: registration, heartbeats and death-watch, the model catalog and placement.

It is never on the data path: clients ask it where a model's partitions live and then
talk to the shards directly. Partition p of every table of a model is placed on the same
shard, so a UDF on that shard sees partition p of all of them together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from psframework.errors import (
    ConfigError, ConnectionLostError, ModelExistsError, PSError, StorageError,
    UnknownModelError,
)
from psframework.config import DEFAULT_MASTER_PORT, Settings, parse_address
from psframework.model import model_type
from psframework.protocol import Message
from psframework.storage.table import TableSpec
from psframework.transport import ClientConnection, connect, serve
from psframework.transport.once import OnceLog

log = logging.getLogger("psframework.master")

__all__ = ["Master", "METADATA_FILE"]

METADATA_FILE = "model.json"
SAVE_FORMAT = 1


@dataclass
class ServerInfo:
    name: str
    address: str
    last_seen: float
    alive: bool = True
    stats: dict = field(default_factory=dict)


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

    def describe(self, servers: dict[str, ServerInfo]) -> dict:
        return {
            "name": self.name, "uid": self.uid, "type": self.type, "config": self.config,
            "tables": [t.to_wire() for t in self.tables], "placement": self.placement,
            "servers": {s: servers[s].address for s in set(self.placement) if s in servers},
            "alive": {s: servers[s].alive for s in set(self.placement) if s in servers},
        }


class Master:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers: dict[str, ServerInfo] = {}
        self.models: dict[str, ModelEntry] = {}
        self.address = ""
        self._ids = 0
        self._rotation = 0
        self._conns: dict[str, ClientConnection] = {}
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # catalog changes one at a time
        self.once = OnceLog(settings.dedup_window, settings.dedup_bytes)  # catalog changes are tagged once-only
        self.handle = self.once.wrap(self._dispatch)
        self._ops = {
            "ping": self._ping, "register": self._register, "heartbeat": self._heartbeat,
            "create_model": self._create_model, "lookup": self._lookup, "destroy": self._destroy,
            "save": self._save, "load": self._load, "status": self._status,
        }

    async def start(self) -> str:
        s = self.settings
        port = DEFAULT_MASTER_PORT if s.port is None else s.port
        self._server = await serve(self.handle, s.host, port, limits=s.limits,
                                      secret=s.secret_bytes, name=lambda: "master")
        port = self._server.sockets[0].getsockname()[1]
        self.address = s.advertised(port)
        self._watch = asyncio.ensure_future(self._death_watch())
        return self.address

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()
        for conn in self._conns.values():
            conn.close()

    def _dispatch(self, msg: Message):
        op = self._ops.get(msg.op)
        if op is None:
            raise UnknownModelError(f"the master has no op {msg.op!r}; is this client talking "
                                    "to a shard's address as if it were the master?", op=msg.op)
        return op(msg)

    # -- servers -------------------------------------------------------------------------
    def _ping(self, msg: Message):
        return {"name": "master"}, ()

    def _register(self, msg: Message):
        self._ids += 1
        name = f"shard-{self._ids}"
        address = str(msg.args.get("address"))
        parse_address(address)
        self.servers[name] = ServerInfo(name, address, time.monotonic())
        log.info("shard %s registered at %s (%d alive)", name, address, len(self.alive()))
        return {"name": name}, ()

    def _heartbeat(self, msg: Message):
        info = self.servers.get(str(msg.args.get("name")))
        if info is None:
            raise UnknownModelError("unknown server; register again")
        if not info.alive:
            log.warning("shard %s is back after missing heartbeats", info.name)
        info.alive = True
        info.last_seen = time.monotonic()
        info.stats = msg.args.get("stats") or {}
        return {}, ()

    def alive(self) -> list[str]:
        return [s.name for s in self.servers.values() if s.alive]

    async def _death_watch(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.heartbeat_interval)
            now = time.monotonic()
            for info in self.servers.values():
                if info.alive and now - info.last_seen > s.heartbeat_timeout:
                    info.alive = False
                    hit = [m.name for m in self.models.values() if info.name in m.placement]
                    log.warning("shard %s at %s missed heartbeats for %.1fs: marked dead "
                                "(models affected: %s)", info.name, info.address,
                                now - info.last_seen, hit or "none")
                    conn = self._conns.pop(info.name, None)
                    if conn is not None:
                        conn.close()

    async def _shard_request(self, shard: str, op: str, model: str, args: dict) -> Message:
        s = self.settings
        conn = self._conns.get(shard)
        if conn is None or not conn.is_open:
            info = self.servers[shard]
            if not info.alive:
                raise ConnectionLostError(f"shard {shard} at {info.address} is dead",
                                          shard=shard, model=model, op=op)
            host, port = parse_address(info.address)
            conn = await connect(host, port, limits=s.limits, secret=s.secret_bytes,
                                 timeout=s.connect_timeout)
            self._conns[shard] = conn
        return await conn.request(op, model, args, timeout=s.request_timeout)

    async def _on_shards(self, entry: ModelEntry, op: str, extra: dict | None = None,
                         per_shard=None) -> None:
        """Send `op` to every shard hosting `entry`, concurrently; raise the first error."""
        shards = sorted(set(entry.placement))
        args = [{**(extra or {}), **(per_shard(sh) if per_shard else {})} for sh in shards]
        replies = await asyncio.gather(
            *(self._shard_request(sh, op, entry.name, a) for sh, a in zip(shards, args)),
            return_exceptions=True)
        errors = [r for r in replies if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _drop(self, entry: ModelEntry) -> None:
        """Destroy `entry`'s partitions on its live shards, best effort."""
        await asyncio.gather(*(self._shard_request(sh, "destroy", entry.name, {})
                               for sh in set(entry.placement) if self.servers[sh].alive),
                             return_exceptions=True)

    def _live(self, name: str) -> list[str]:
        alive = self.alive()
        if not alive:
            raise ConnectionLostError("no live shards are registered; start some with "
                                      "`psframework serve shard --master HOST:PORT`", model=name)
        return alive

    def _spread(self, alive: list[str], parts: int) -> list[str]:
        """Shards for partitions 0..parts-1, round robin from a rotating start, so that
        successive models do not all begin on the same shard."""
        offset = self._rotation
        self._rotation += 1
        return [alive[(p + offset) % len(alive)] for p in range(parts)]

    # -- catalog -------------------------------------------------------------------------
    def _entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(f"no model named {name!r} (models: {sorted(self.models)})",
                                    model=name) from None

    def _place(self, name: str, type_: str, config: dict) -> ModelEntry:
        cls = model_type(type_)
        tables = cls(config).tables()
        if not tables:
            raise ConfigError(f"model type {type_!r} declared no tables", model=name)
        alive = self._live(name)
        tables = [t.placed(len(alive)).validate(cls.aggregators) for t in tables]
        if len({t.name for t in tables}) != len(tables):
            raise ConfigError(f"model type {type_!r} declared two tables with one name")
        return ModelEntry(name, type_, config, tables,
                          self._spread(alive, max(t.parts for t in tables)))

    async def _install(self, entry: ModelEntry, op: str, extra: dict) -> None:
        """Create (or load) the model's partitions on its shards; undo on failure."""
        args = {"type": entry.type, "uid": entry.uid, "config": entry.config,
                "tables": [t.to_wire() for t in entry.tables], **extra}
        try:
            await self._on_shards(entry, op, args, lambda shard: {"parts": entry.parts_on(shard)})
        except PSError:
            await self._drop(entry)
            raise
        self.models[entry.name] = entry

    async def _create_model(self, msg: Message):
        name = msg.model
        if not name:
            raise ConfigError("a model needs a non-empty name")
        type_ = str(msg.args.get("type"))
        config = msg.args.get("config") or {}
        async with self._lock:
            existing = self.models.get(name)
            if existing is not None:
                if msg.args.get("exists_ok") and existing.type == type_:
                    return existing.describe(self.servers), ()
                raise ModelExistsError(f"a model named {name!r} already exists; destroy it or "
                                       "pick another name", model=name)
            entry = self._place(name, type_, config)
            await self._install(entry, "create", {})
            log.info("created model %s (%s) over %s", name, type_, sorted(set(entry.placement)))
            return entry.describe(self.servers), ()

    def _lookup(self, msg: Message):
        return self._entry(msg.model).describe(self.servers), ()

    async def _destroy(self, msg: Message):
        async with self._lock:
            entry = self.models.pop(msg.model, None)
            if entry is None:
                return {"destroyed": False}, ()
            await self._drop(entry)
            return {"destroyed": True}, ()

    async def _save(self, msg: Message):
        entry = self._entry(msg.model)
        directory = Path(str(msg.args.get("path"))).resolve()
        await self._on_shards(entry, "save", {"path": str(directory)})
        meta = {"format": SAVE_FORMAT, "name": entry.name, "type": entry.type,
                "config": entry.config, "tables": [t.to_wire() for t in entry.tables],
                "parts": len(entry.placement)}
        try:
            (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        except OSError as e:
            raise StorageError(f"cannot write {directory / METADATA_FILE}: {e}") from None
        return {"path": str(directory)}, ()

    async def _load(self, msg: Message):
        directory = Path(str(msg.args.get("path"))).resolve()
        try:
            meta = json.loads((directory / METADATA_FILE).read_text())
        except (OSError, ValueError) as e:
            raise StorageError(f"{directory} holds no saved model ({e}); pass the directory "
                               "that save() wrote") from None
        if meta.get("format") != SAVE_FORMAT:
            raise StorageError(f"{directory} was saved in format {meta.get('format')}, "
                               f"this master reads {SAVE_FORMAT}")
        name = msg.model or meta["name"]
        async with self._lock:
            if name in self.models:
                raise ModelExistsError(f"a model named {name!r} already exists; destroy it or "
                                       "load under another name", model=name)
            tables = [TableSpec.from_wire(t) for t in meta["tables"]]
            placement = self._spread(self._live(name), int(meta["parts"]))
            entry = ModelEntry(name, meta["type"], meta["config"], tables, placement)
            await self._install(entry, "load", {"path": str(directory)})
            return entry.describe(self.servers), ()

    def _status(self, msg: Message):
        now = time.monotonic()
        return {
            "address": self.address,
            "servers": [{"name": s.name, "address": s.address, "alive": s.alive,
                         "last_seen": round(now - s.last_seen, 3),
                         "bytes": s.stats.get("bytes", 0), "pid": s.stats.get("pid"),
                         "ops": s.stats.get("ops", {})} for s in self.servers.values()],
            "models": [m.describe(self.servers) for m in self.models.values()],
        }, ()
