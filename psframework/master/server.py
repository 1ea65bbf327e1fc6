"""The master: registration, heartbeats and death-watch, the model catalog and placement.

It is never on the data path: clients ask it where a model's partitions live and then
talk to the shards directly. Partition p of every table of a model is placed on the same
shard, so a UDF on that shard sees partition p of all of them together.

What it guarantees about its own state:
- Every field a shard sends is validated before it is stored (master.messages); a
  malformed message is refused alone. A shard is admitted only after the master reached
  it back at the address it gave; a shard dead for `forget_after` seconds is forgotten.
- A shard keeps its name across reconnections: registering again, it reports what it
  hosts, and the master tells it to drop what the catalog no longer places on it.
- A create is validated entirely — plugin config, tables, and the memory it needs on
  each shard against that shard's budget — before any shard allocates anything.
- A save is published atomically and load verifies every file (master.saves,
  storage.files); each partition in it is a consistent snapshot (shard.copies).
- A shard is declared dead at once when its port refuses after its connection dropped,
  else after `heartbeat_timeout` of silence; its partitions then fail over
  (master.failover). Models are checkpointed as asked (master.checkpoints), and the
  catalog is kept in `state_dir` for a restart (master.state).
- `shutdown` stops the whole cluster: every live shard is told to stop, then the master
  stops (`psframework stop`).
- What it shows of the cluster — `status`, its metrics endpoint, the training gauges
  loops `report` per model — is master.observe's.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import time

from psframework.config import DEFAULT_MASTER_PORT, Settings, parse_address
from psframework.errors import (
    ConfigError, ConnectionLostError, ModelExistsError, PSError, StorageError,
    UnknownModelError,
)
from psframework.master.catalog import (
    ModelEntry, ServerInfo, check_memory, differences, model_name, reconcile, save_directory,
)
from psframework.master.checkpoints import Checkpoints
from psframework.master.failover import Failover
from psframework.master.messages import Heartbeat, Registration, parse
from psframework.master.observe import Observer
from psframework.master.saves import Saves, partitions
from psframework.master.state import read_state, write_state
from psframework.metrics import RequestTimes
from psframework.model import model_type
from psframework.protocol import Message
from psframework.storage import files
from psframework.storage.table import TableSpec
from psframework.transport import ClientConnection, Traffic, connect, serve
from psframework.transport.once import OnceLog

log = logging.getLogger("psframework.master")

__all__ = ["Master", "METADATA_FILE"]

METADATA_FILE = files.MANIFEST
READS = ("ping", "lookup", "status", "heartbeat", "report")
PROBE_TIMEOUT = 0.5  # seconds to wait for a shard's port to accept a connection
PROBES = (0.0, 0.05, 0.15, 0.3)  # pauses before each look at a shard whose connection dropped


class Master:
    def __init__(self, settings: Settings, listen_fd: int | None = None) -> None:
        self.settings = settings
        self.listen_fd = listen_fd  # a listening socket handed down by a LocalCluster
        self.servers: dict[str, ServerInfo] = {}
        self.models: dict[str, ModelEntry] = {}
        self.address = ""
        self._ids = 0
        self._rotation = 0
        self._tls = settings.client_tls()
        self._conns: dict[str, ClientConnection] = {}
        self._server: asyncio.Server | None = None
        self._watch: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # failovers, probes, checkpoints running
        self.failover = Failover(self)
        self.checkpoints = Checkpoints(self)
        self.saves = Saves(self)
        self.observe = Observer(self)  # status, the metrics endpoint, training gauges
        self.lock = asyncio.Lock()  # catalog changes one at a time
        self._installing: set[str] = set()  # uids being created or loaded right now
        self._admitting = asyncio.Semaphore(16)  # registrations checked at once
        self.once = OnceLog(settings.dedup_window, settings.dedup_bytes, reads=READS)
        self._ops = {
            "ping": self._ping, "register": self._register, "heartbeat": self._heartbeat,
            "create_model": self._create_model, "lookup": self._lookup, "destroy": self._destroy,
            "save": self._save, "load": self._load, "status": self.observe.status,
            "checkpoint": self._checkpoint_op, "report": self.observe.report,
            "shutdown": self._shutdown,
        }
        self.requests = RequestTimes()
        self.handle = self.requests.timed(self.once.wrap(self._dispatch), self._ops)
        self.traffic = Traffic()
        self._stopping = False  # told to shut down: shards leaving are not failures
        self._stopped = asyncio.Event()

    async def start(self) -> str:
        s = self.settings
        port = DEFAULT_MASTER_PORT if s.port is None else s.port
        sock = None if self.listen_fd is None else socket.socket(fileno=self.listen_fd)
        self._server = await serve(self.handle, s.host, port, limits=s.limits,
                                   secret=s.secret_bytes, name=lambda: "master",
                                   traffic=self.traffic, handshake_timeout=s.handshake_timeout,
                                   max_connections=s.max_connections,
                                   ssl_context=s.server_tls(), sock=sock)
        port = self._server.sockets[0].getsockname()[1]
        self.address = s.advertised(port)
        self._restore_state()
        for name in self.servers:  # a restarted master: watch the shards it knew
            self.spawn(self._reach_again(name))
        self._watch = asyncio.ensure_future(self._death_watch())
        self.spawn(self.checkpoints.run())
        self.observe.start()
        return self.address

    def spawn(self, coro) -> asyncio.Task:
        """Run `coro` in the background until it ends or the master stops."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the catalog on disk -------------------------------------------------------------
    def persist(self) -> None:
        """Write the catalog to state_dir (when set), after every change."""
        if self.settings.state_dir is not None:
            write_state(self.settings.state_dir, self._ids, self._rotation, self.servers,
                        self.models)

    def _restore_state(self) -> None:
        if self.settings.state_dir is None:
            return
        state = read_state(self.settings.state_dir)
        if state is not None:
            self._ids, self._rotation, self.servers, self.models = state
            log.warning("master restarted with %d models and %d shards from %s; waiting for "
                        "the shards' heartbeats", len(self.models), len(self.servers),
                        self.settings.state_dir)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for conn in self._conns.values():
            conn.close()
        self.observe.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        """Return once the master has stopped (after a `shutdown` request)."""
        await self._stopped.wait()

    async def _shutdown(self, msg: Message):
        """Stop every live shard, then this master once the reply has gone out. Shards
        that cannot be told are named in the reply (they exit by themselves after
        master_grace seconds without the master)."""
        self._stopping = True
        names = self.alive()
        log.info("shutdown requested: stopping %d shards, then the master", len(names))
        replies = await asyncio.gather(*(self.shard_request(n, "shutdown", "", {})
                                         for n in names), return_exceptions=True)
        failed = {n: str(r) for n, r in zip(names, replies) if isinstance(r, BaseException)}
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.stop()))
        return {"stopping": True, "shards": [n for n in names if n not in failed],
                "failed": failed}, ()

    def _dispatch(self, msg: Message):
        op = self._ops.get(msg.op)
        if op is None:
            raise UnknownModelError(f"the master has no op {msg.op!r}; is this client talking "
                                    "to a shard's address as if it were the master?", op=msg.op)
        return op(msg)

    # -- servers -------------------------------------------------------------------------
    def _ping(self, msg: Message):
        return {"name": "master"}, ()

    async def _register(self, msg: Message):
        reg = parse(Registration, msg.args, "register")
        if self._stopping:
            raise ConnectionLostError("the master is shutting down")
        async with self._admitting:
            conn = await self._reach(reg.address)
        name = self._name_for(reg)
        known = self.servers.get(name)
        if known is not None and not known.alive:
            log.warning("shard %s is back at %s", name, reg.address)
        self.servers[name] = ServerInfo(name, reg.address, time.monotonic(), machine=reg.machine,
                                        memory=reg.memory, memory_limit=reg.memory_limit)
        old = self._conns.pop(name, None)
        if old is not None:
            old.close()
        self._conns[name] = conn  # the connection that admitted it is the master's to it
        self.spawn(self._watch_connection(name, conn))
        drop = reconcile(name, reg.hosts, self.models, self._installing)
        self.persist()
        if any(entry.lost and entry.checkpoint for entry in self.models.values()):
            self.spawn(self.failover.restore_lost())  # a shard to bring them back on
        for entry in self.models.values():  # and to put the missing copies on, maybe
            if entry.degraded():
                self.failover.rebuild(entry)
        log.info("shard %s registered at %s (%d alive)%s", name, reg.address, len(self.alive()),
                 f"; it drops {drop}" if drop else "")
        return {"name": name, "drop": drop}, ()

    async def _reach(self, address: str) -> ClientConnection:
        """Admit only a server that answers at the address it gave, so nobody can list
        shards that are not there; the connection is kept for the master's requests."""
        s = self.settings
        host, port = parse_address(address)
        try:
            conn = await connect(host, port, limits=s.limits, secret=s.secret_bytes,
                                 timeout=s.connect_timeout, ssl_context=self._tls)
        except PSError as e:
            raise ConnectionLostError(f"the master cannot reach the registering shard at "
                                      f"{address} ({e.message}); advertise an address the "
                                      "master can connect to (--advertise)") from None
        return conn

    def _name_for(self, reg: Registration) -> str:
        """The shard's own name when it has one (unless another live shard holds it),
        else a new one."""
        taken = self.servers.get(reg.name) if reg.name else None
        if reg.name and (taken is None or taken.address == reg.address or not taken.alive):
            m = re.fullmatch(r"shard-(\d+)", reg.name)
            if m:
                self._ids = max(self._ids, int(m[1]))
            return reg.name
        self._ids += 1
        while f"shard-{self._ids}" in self.servers:
            self._ids += 1
        return f"shard-{self._ids}"

    def _heartbeat(self, msg: Message):
        beat = parse(Heartbeat, msg.args, "heartbeat")
        info = self.servers.get(beat.name)
        if info is None:
            raise UnknownModelError("unknown server; register again")
        if not info.alive:  # its partitions may have moved: it must reconcile first
            raise UnknownModelError(f"shard {info.name} was declared dead; register again")
        info.last_seen = time.monotonic()
        info.stats = beat.stats
        return {}, ()

    def alive(self) -> list[str]:
        return [s.name for s in self.servers.values() if s.alive]

    async def _death_watch(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(min(s.heartbeat_interval, s.heartbeat_timeout / 4))
            now = time.monotonic()
            for info in list(self.servers.values()):
                if self._stopping:
                    return
                silent = now - info.last_seen
                if info.alive and silent > s.heartbeat_timeout:
                    self._declare_dead(info, f"missed heartbeats for {silent:.1f}s")
                elif not info.alive and silent > s.forget_after:
                    log.info("forgetting shard %s, dead for %.0fs", info.name, silent)
                    del self.servers[info.name]
                    self.persist()

    def _declare_dead(self, info: ServerInfo, why: str) -> None:
        info.alive = False
        hit = [m.name for m in self.models.values() if info.name in m.shards()]
        log.warning("shard %s at %s %s: declared dead (models affected: %s)", info.name,
                    info.address, why, hit or "none")
        conn = self._conns.pop(info.name, None)
        if conn is not None:
            conn.close()
        if hit:
            self.spawn(self.failover.shard_died(info.name))

    async def _reach_again(self, name: str) -> None:
        """Connect to a shard a restarted master knew, so that a drop is seen at once
        (one that cannot be reached is left to its heartbeats)."""
        try:
            await self.shard_request(name, "ping", "", {})
        except PSError:
            pass

    async def _watch_connection(self, name: str, conn: ClientConnection) -> None:
        """When the master's connection to a shard drops, look at once: a port that
        refuses connections means the process is gone (a kill -9, a crash), and the shard
        is declared dead now instead of a heartbeat timeout later. A shard that is merely
        busy still accepts (the kernel does), and is left to its heartbeats."""
        await conn.closed
        info = self.servers.get(name)
        if (self._stopping or info is None or not info.alive
                or self._conns.get(name) not in (conn, None)):
            return
        host, port = parse_address(info.address)
        for pause in PROBES:  # a dying process may close this connection before its port
            await asyncio.sleep(pause)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                   PROBE_TIMEOUT)
                writer.close()
            except (OSError, asyncio.TimeoutError) as e:
                if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == \
                        errno.ECONNREFUSED:
                    if info.alive and self.servers.get(name) is info:
                        self._declare_dead(info, "closed its connection and refuses new ones")
                    return
            # it answered (or is unreachable or slow): look again, then leave it to heartbeats

    async def shard_request(self, shard: str, op: str, model: str, args: dict, *,
                            timeout: float | None = None) -> Message:
        s = self.settings
        conn = self._conns.get(shard)
        if conn is None or not conn.is_open:
            info = self.servers.get(shard)
            if info is None or not info.alive:
                raise ConnectionLostError(f"shard {shard} is dead", shard=shard, model=model,
                                          op=op)
            host, port = parse_address(info.address)
            conn = await connect(host, port, limits=s.limits, secret=s.secret_bytes,
                                 timeout=s.connect_timeout, ssl_context=self._tls)
            self._conns[shard] = conn
            self.spawn(self._watch_connection(shard, conn))
        return await conn.request(op, model, args, timeout=timeout or s.request_timeout)

    async def on_shards(self, entry: ModelEntry, op: str, extra: dict | None = None,
                        per_shard=None, shards: list[str] | None = None) -> list[Message]:
        """Send `op` to every shard holding a copy of `entry` (or to `shards`),
        concurrently; raise the first error."""
        shards = entry.shards() if shards is None else shards
        args = [{**(extra or {}), **(per_shard(sh) if per_shard else {})} for sh in shards]
        replies = await asyncio.gather(
            *(self.shard_request(sh, op, entry.name, a) for sh, a in zip(shards, args)),
            return_exceptions=True)
        errors = [r for r in replies if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return [r for r in replies if isinstance(r, Message)]  # all of them, now

    async def _drop(self, entry: ModelEntry) -> None:
        """Destroy `entry`'s partitions on its live shards, best effort."""
        await asyncio.gather(*(self.shard_request(sh, "destroy", entry.name, {"uid": entry.uid})
                               for sh in entry.shards()
                               if sh in self.servers and self.servers[sh].alive),
                             return_exceptions=True)

    def _live(self, name: str) -> list[str]:
        alive = self.alive()
        if not alive:
            raise ConnectionLostError("no live shards are registered; start some with "
                                      "`psframework serve shard --master HOST:PORT`", model=name)
        return alive

    def _spread(self, alive: list[str], parts: int, replicas: int) -> list[list[str]]:
        """Shards for partitions 0..parts-1 (the primary, then the backups), round robin
        from a rotating start, so that successive models do not all begin on the same
        shard; a partition's copies are on different shards."""
        offset = self._rotation
        self._rotation += 1
        return [[alive[(p + offset + r) % len(alive)] for r in range(replicas)]
                for p in range(parts)]

    # -- catalog -------------------------------------------------------------------------
    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(f"no model named {name!r} (models: {sorted(self.models)})",
                                    model=name) from None

    def _place(self, name: str, type_: str, config: dict, tables: list[TableSpec] | None = None,
               parts: int | None = None, replicas: int | None = None) -> ModelEntry:
        """A catalog entry for a new model, validated to the end, placed on live shards
        and checked against their memory — before anything is allocated anywhere."""
        cls = model_type(type_)
        if tables is None:
            tables = cls(config).tables()
            if not tables:
                raise ConfigError(f"model type {type_!r} declared no tables", model=name)
        alive = self._live(name)
        tables = [t.validate(cls.aggregators).placed(len(alive)) for t in tables]
        if len({t.name for t in tables}) != len(tables):
            raise ConfigError(f"model type {type_!r} declared two tables with one name")
        replicas = self.settings.replicas if replicas is None else replicas
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 8:
            raise ConfigError(f"replicas must be an integer from 1 to 8, got {replicas!r}",
                              model=name)
        if replicas > len(alive):
            raise ConfigError(f"replicas={replicas} needs that many live shards; {len(alive)} "
                              "are registered: start more, or ask for fewer replicas", model=name)
        copies = self._spread(alive, parts or max(t.parts for t in tables), replicas)
        entry = ModelEntry(name, type_, config, tables, [c[0] for c in copies],
                           replicas=replicas, backups=[c[1:] for c in copies])
        check_memory(entry, self.servers, self.models.values())
        return entry

    @staticmethod
    def model_args(entry: ModelEntry) -> dict:
        """What a shard needs to host partitions of `entry`."""
        return {"type": entry.type, "uid": entry.uid, "config": entry.config,
                "tables": [t.to_wire() for t in entry.tables]}

    def backup_pairs(self, entry: ModelEntry, shard: str) -> list:
        """[[partition, [backup addresses]], ...] of the partitions `shard` is primary of."""
        return [[p, [self.servers[b].address for b in entry.backups[p] if b in self.servers]]
                for p in entry.parts_on(shard)]

    async def _install(self, entry: ModelEntry, op: str, extra: dict,
                       per_shard=None) -> list[Message]:
        """Create (or load) the model's partitions on its shards; undo on failure."""
        args = {**self.model_args(entry), **extra}
        self._installing.add(entry.uid)
        try:
            replies = await self.on_shards(
                entry, op, args, lambda shard: {"parts": entry.hosted_on(shard),
                                                "backups": self.backup_pairs(entry, shard),
                                                **(per_shard(shard) if per_shard else {})})
        except PSError:
            await self._drop(entry)
            raise
        finally:
            self._installing.discard(entry.uid)
        self.models[entry.name] = entry
        self.persist()
        return replies

    async def _create_model(self, msg: Message):
        name = model_name(msg.model)
        type_, config = msg.args.get("type"), msg.args.get("config") or {}
        if not isinstance(type_, str) or not isinstance(config, dict):
            raise ConfigError("create_model needs a plugin type (a string) and a config (a map)",
                              model=name)
        async with self.lock:
            existing = self.models.get(name)
            if existing is not None:
                if msg.args.get("exists_ok") is True:
                    if (existing.type, existing.config) != (type_, config):
                        raise ModelExistsError(
                            f"a model named {name!r} exists, but as {existing.type} with "
                            f"{differences(existing.config, config)}; destroy it or ask for "
                            "the same model", model=name)
                    return existing.describe(self.servers), ()
                raise ModelExistsError(f"a model named {name!r} already exists; destroy it or "
                                       "pick another name", model=name)
            entry = self._place(name, type_, config, replicas=msg.args.get("replicas"))
            entry.checkpoint_interval = _interval(msg.args.get("checkpoint_interval"), name)
            await self._install(entry, "create", {})
            log.info("created model %s (%s) over %s", name, type_, sorted(set(entry.placement)))
            return entry.describe(self.servers), ()

    def _lookup(self, msg: Message):
        return self.entry(msg.model).describe(self.servers), ()

    async def _destroy(self, msg: Message):
        async with self.lock:
            entry = self.models.pop(msg.model, None)
            self.observe.forget(msg.model)
            if entry is None:
                return {"destroyed": False}, ()
            self.persist()
            await self._drop(entry)
            return {"destroyed": True}, ()

    async def _save(self, msg: Message):
        directory = save_directory(msg.args.get("path"))
        entry = self.entry(msg.model)
        save_id, _ = await self.saves.write(entry, directory)
        return {"path": str(directory), "save_id": save_id}, ()

    async def _checkpoint_op(self, msg: Message):
        return await self.checkpoints.take(self.entry(msg.model)), ()

    async def _load(self, msg: Message):
        directory = save_directory(msg.args.get("path"))
        manifest = files.read_manifest(directory)
        name = model_name(msg.model or manifest.name)
        async with self.lock:
            if name in self.models:
                raise ModelExistsError(f"a model named {name!r} already exists; destroy it or "
                                       "load under another name", model=name)
            try:
                tables = [TableSpec.from_wire(t) for t in manifest.tables]
            except ConfigError as e:
                raise StorageError(f"{directory / files.MANIFEST}: {e.message}") from None
            missing = sorted(partitions(tables) - {(r.table, r.part) for r in manifest.files})
            if missing or any(t.parts < 1 or t.parts > manifest.parts for t in tables):
                raise StorageError(f"{directory / files.MANIFEST} lists no file for partitions "
                                   f"{missing[:5]} of its tables; the save is incomplete")
            entry = self._place(name, manifest.type, manifest.config, tables, manifest.parts,
                                replicas=msg.args.get("replicas"))

            def records_for(shard: str) -> dict:
                parts = set(entry.hosted_on(shard))
                return {"files": [r.model_dump() for r in manifest.files if r.part in parts]}
            await self._install(entry, "load", {"path": str(directory)}, records_for)
            return entry.describe(self.servers), ()


def _interval(value: object, model: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"checkpoint_interval must be a number of seconds > 0, got {value!r}",
                          model=model)
    return float(value)

