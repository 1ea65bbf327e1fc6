"""The shard server: hosts partitions, answers pulls, pushes and model UDF ops.

Guarantees:
- A request tagged `once` is applied at most once (see transport.once); together with
  client retries that makes pushes exactly-once.
- A bad request (unknown model, wrong shape or dtype, out-of-range index, a UDF raising)
  fails only that request; the shard keeps serving.
- A create or load is refused, before anything is allocated, when the shard would hold
  more than its `memory_limit`.
- Built-in ops and ordinary UDFs run on the event loop; UDFs marked `threaded=True` run on
  a thread pool, where GIL-free numba kernels use more cores — unless their request is
  smaller than `inline_below` bytes, when the hand-off would cost more than the work.
  The built-in aggregation kernels load from numba's cache on that pool as the shard
  starts; a plugin's aggregators are compiled and its `on_partition` runs there too.
- Saved partitions are `.npy` files with checksums (storage.files), so a load is
  bit-for-bit or refused.
- The shard registers with the master, heartbeats from its own thread (so a busy event
  loop never delays a beat: shard.heartbeat), and exits by itself when the master has
  been unreachable for `master_grace` seconds. It keeps its name when it registers
  again, reporting what it hosts, and drops what the master says is no longer its.
- Writes pass their partition's gate and reach its backups before they are answered;
  snapshots and copies of partitions are consistent (shard.copies).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from psframework.config import Settings, parse_address
from psframework.errors import (
    ConfigError, ConnectionLostError, ModelExistsError, MovedError, ProtocolError, PSError,
    RequestTimeoutError, ShapeError, StorageError, UnknownModelError,
)
from psframework.metrics import MetricsEndpoint, RequestTimes, resident_bytes
from psframework.model import BUILTIN_OPS, Model, ShardView, model_type
from psframework.protocol import Message
from psframework.storage import aggregate, files, memory
from psframework.storage.table import Partition, TableSpec
from psframework.transport import ClientConnection, Traffic, connect, serve
from psframework.shard.copies import Copies
from psframework.shard.heartbeat import Heartbeat
from psframework.shard.hosted import HostedModel
from psframework.shard.replicas import Forwarder
from psframework.transport.once import OnceLog

log = logging.getLogger("psframework.shard")

__all__ = ["Shard"]

READS = ("ping", "pull_rows", "pull_elems", "stats")
WRITES = ("push_rows", "push_elems")  # built-in ops that change a partition through its gate


class Shard(Copies):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = "shard"
        self.models: dict[str, HostedModel] = {}
        self.once = OnceLog(settings.dedup_window, settings.dedup_bytes, reads=READS)
        self.requests = RequestTimes()
        self.udf_seconds: dict[str, float] = {}  # CPU time inside model ops, per op
        self.traffic = Traffic()
        self.address = ""
        self._pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="psf-udf")
        self._tls = settings.client_tls()
        self._warm: asyncio.Future | None = None  # the built-in kernels, loading
        self.memory_limit = settings.memory_limit if settings.memory_limit is not None else \
            int(memory.physical_memory() * memory.DEFAULT_SHARE)
        self._server: asyncio.Server | None = None
        self._master: ClientConnection | None = None
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._beats: Heartbeat | None = None
        self._report: dict = {}  # the stats the next heartbeat carries
        self._registering: asyncio.Task | None = None
        # writes are refused after this monotonic time (None: no master, no lease)
        self._lease_until: float | None = None
        self.forwarder = Forwarder(settings, self._backups_of)
        self.replica_misses = 0  # writes a backup refused (see Copies._gated)
        # built-in op "x" is method _x: the plugin API's BUILTIN_OPS, which no UDF may
        # take, is this table's list of names, so the two cannot drift apart
        self._builtin = {op: getattr(self, f"_{op}") for op in BUILTIN_OPS}
        self._ops_known = set(self._builtin)  # and the UDFs of the plugins hosted
        # every request: counted and timed by op (peers can't grow the dicts), then
        # through the exactly-once window to its op
        self.handle = self.requests.timed(self.once.wrap(self._dispatch), self._ops_known)
        self.metrics: MetricsEndpoint | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> str:
        s = self.settings
        self._server = await serve(self.handle, s.host, s.port or 0, limits=s.limits,
                                   secret=s.secret_bytes, name=lambda: self.name,
                                   traffic=self.traffic, handshake_timeout=s.handshake_timeout,
                                   max_connections=s.max_connections, ssl_context=s.server_tls())
        port = self._server.sockets[0].getsockname()[1]
        self.address = s.advertised(port)
        # the built-in kernels, loaded before any request needs them (the first create waits
        # for this behind it on the pool, never the event loop)
        self._warm = asyncio.get_running_loop().run_in_executor(self._pool, aggregate.warm_up)
        if s.metrics_port is not None:
            self.metrics = MetricsEndpoint("shard", self._metrics_snapshot,
                                           asyncio.get_running_loop())
            self.metrics.start(s.metrics_host, s.metrics_port)
        if s.master:
            await self._first_registration()
            loop = asyncio.get_running_loop()
            self._report = self._stats_args()
            self._beats = Heartbeat(
                s, name=lambda: self.name, stats=lambda: self._report,
                unknown=lambda: loop.call_soon_threadsafe(self._register_again),
                unreachable=lambda why: loop.call_soon_threadsafe(self._master_gone, why),
                answered=self._extend_lease)
            self._beats.start()
            self._tasks.append(asyncio.ensure_future(self._refresh_report()))
        return self.address

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._beats is not None:
            self._beats.stop()
        for t in self._tasks:
            t.cancel()
        if self._server is not None:
            self._server.close()
        if self._master is not None:
            self._master.close()
        self.forwarder.close()
        if self.metrics is not None:
            self.metrics.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    async def _first_registration(self) -> None:
        """Register, waiting up to master_grace for a master that is still starting (a
        LocalCluster starts the master and its shards at once; a deployment may too)."""
        deadline = time.monotonic() + self.settings.master_grace
        while True:
            try:
                return await self._register()
            except (ConnectionLostError, RequestTimeoutError) as e:
                if time.monotonic() >= deadline:
                    raise
                log.info("master %s not answering yet (%s); trying again",
                         self.settings.master, e.message)
                await asyncio.sleep(0.05)

    async def _register(self) -> None:
        assert self.settings.master is not None  # a shard registers only when it has one
        host, port = parse_address(self.settings.master)
        s = self.settings
        self._master = await connect(host, port, limits=s.limits, secret=s.secret_bytes,
                                     timeout=s.connect_timeout, ssl_context=self._tls)
        again = self.name != "shard"
        args = {"address": self.address, "machine": memory.machine_id(),
                "memory": memory.physical_memory(),
                "memory_limit": s.memory_limit,
                "hosts": {n: {"uid": m.uid, "parts": sorted(m.parts)} for n, m in self.models.items()}}
        if again:
            args["name"] = self.name
        sent = time.monotonic()
        reply = await self._master.request("register", args=args, timeout=s.request_timeout)
        self.name = str(reply.args["name"])
        self._extend_lease(sent)
        for model, parts in (reply.args.get("drop") or {}).items():
            self._drop(model, parts)
        log.info("%s with master %s as %s", "registered again" if again else "registered",
                 s.master, self.name)

    def _drop(self, model: str, parts: list[int] | None) -> None:
        """Forget a model (None) or some of its partitions, as the master reconciled."""
        hosted = self.models.get(model)
        if hosted is None:
            return
        if parts is None or set(parts) >= set(hosted.parts):
            del self.models[model]
            hosted.plugin.on_destroy()
        else:
            for p in parts:
                hosted.drop(p)
        log.warning("shard %s dropped %s of model %s: the master no longer places them here",
                    self.name, "all partitions" if parts is None else f"partitions {parts}", model)

    def _register_again(self) -> None:
        """The master does not know this shard (it restarted, or forgot us): register
        again, with what we host, once at a time."""
        if self._registering is not None and not self._registering.done():
            return

        async def register() -> None:
            try:
                if self._master is not None:
                    self._master.close()
                await self._register()
            except PSError as e:
                log.warning("shard %s could not register again: %s", self.name, e)
        self._registering = asyncio.ensure_future(register())

    def _extend_lease(self, since: float) -> None:
        """The master heard from this shard at `since` (or later): it will not declare it
        dead before `since + heartbeat_timeout`, so the lease ends a beat earlier."""
        s = self.settings
        self._lease_until = since + max(s.heartbeat_timeout - s.heartbeat_interval,
                                        s.heartbeat_timeout / 2)

    def _master_gone(self, why: str) -> None:
        log.warning("master %s unreachable for %.0fs (%s); shard %s exits",
                    self.settings.master, self.settings.master_grace, why, self.name)
        asyncio.ensure_future(self.stop())

    async def _refresh_report(self) -> None:
        """Keep the heartbeat's stats fresh, from this loop (the heartbeat's thread
        only reads the latest dict)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            self._report = self._stats_args()

    # -- dispatch ------------------------------------------------------------------------
    def _dispatch(self, msg: Message):
        op = self._builtin.get(msg.op)
        if op is not None and msg.op not in WRITES:
            return op(msg)
        hosted = self._hosted(msg)
        if op is not None:
            return self._write(hosted, msg, op)
        fn = hosted.plugin.udfs.get(msg.op)
        if fn is None:
            raise UnknownModelError(
                f"unknown op {msg.op!r} for model {msg.model!r} (a {type(hosted.plugin).__name__}); "
                f"it offers {sorted(hosted.plugin.udfs)}", model=msg.model, op=msg.op)
        if getattr(fn, "_psf_read", False):
            return self._run_udf(fn, hosted, msg)
        return self._write(hosted, msg, lambda m: self._run_udf(fn, hosted, m))

    def _run_udf(self, fn, hosted: HostedModel, msg: Message):
        view = hosted.view(self.name, self._part(msg))
        if (getattr(fn, "_psf_threaded", False)
                and sum(a.nbytes for a in msg.arrays) >= self.settings.inline_below):
            loop = asyncio.get_running_loop()
            return loop.run_in_executor(self._pool, self._call_udf, fn, hosted.plugin, view, msg)
        return self._call_udf(fn, hosted.plugin, view, msg)

    def _call_udf(self, fn, plugin: Model, view: ShardView, msg: Message):
        started = time.thread_time()
        try:
            out = fn(plugin, view, msg.args, msg.arrays)
        finally:  # a float += from two threads may lose an update: these are metrics
            spent = time.thread_time() - started
            self.udf_seconds[msg.op] = self.udf_seconds.get(msg.op, 0.0) + spent
        if out is None:
            return {}, ()
        if isinstance(out, dict):
            return out, ()
        args, arrays = out
        if not isinstance(args, dict):
            raise ConfigError(f"UDF {msg.op!r} must return (dict, arrays), a dict or None")
        return args, tuple(arrays)

    def _hosted(self, msg: Message) -> HostedModel:
        try:
            hosted = self.models[msg.model]
        except KeyError:
            raise MovedError(f"model {msg.model!r} is not hosted on shard {self.name}; "
                             "create it first, or look it up again if it was moved",
                             model=msg.model) from None
        uid = msg.args.get("uid")
        if uid is not None and uid != hosted.uid:
            raise UnknownModelError(f"model {msg.model!r} was destroyed and created again since "
                                    "this client looked it up; look it up again",
                                    model=msg.model)
        return hosted

    @staticmethod
    def _part(msg: Message) -> int:
        part = msg.args.get("part", 0)
        if not isinstance(part, int):
            raise ShapeError("args.part must be an integer partition index")
        return part

    def _partition(self, msg: Message) -> Partition:
        return self._hosted(msg).partition(str(msg.args.get("table")), self._part(msg))

    @staticmethod
    def _arrays(msg: Message, n: int) -> tuple[np.ndarray, ...]:
        if len(msg.arrays) != n:
            raise ShapeError(f"op {msg.op} takes {n} arrays, got {len(msg.arrays)}")
        return msg.arrays

    # -- built-in ops --------------------------------------------------------------------
    def _ping(self, msg: Message):
        return {"name": self.name}, ()

    def _pull_rows(self, msg: Message):
        (rows,) = self._arrays(msg, 1)
        return {}, (self._partition(msg).pull_rows(rows),)

    def _pull_elems(self, msg: Message):
        rows, cols = self._arrays(msg, 2)
        return {}, (self._partition(msg).pull_elems(rows, cols),)

    def _push_rows(self, msg: Message):
        rows, values = self._arrays(msg, 2)
        self._partition(msg).push_rows(rows, values)
        return {}, ()

    def _push_elems(self, msg: Message):
        rows, cols, values = self._arrays(msg, 3)
        self._partition(msg).push_elems(rows, cols, values)
        return {}, ()

    def _new_model(self, msg: Message) -> tuple[type[Model], Model, dict[str, TableSpec], list[int]]:
        type_, config = msg.args.get("type"), msg.args.get("config") or {}
        tables, parts = msg.args.get("tables"), msg.args.get("parts")
        if not (isinstance(type_, str) and isinstance(config, dict) and isinstance(tables, list)
                and isinstance(parts, list) and all(isinstance(t, dict) for t in tables)
                and all(isinstance(p, int) and not isinstance(p, bool) for p in parts)):
            raise ProtocolError(f"{msg.op} needs type (string), config (map), tables (list of "
                                "maps) and parts (list of integers)", op=msg.op)
        cls = model_type(type_)
        plugin = cls(config)
        specs = {}
        for t in tables:
            spec = TableSpec.from_wire(t).validate(cls.aggregators)
            if spec.parts < 1:
                raise ConfigError(f"table {spec.name!r} has no partition count", model=msg.model)
            specs[spec.name] = spec
        if len(specs) != len(tables) or not specs:
            raise ConfigError("a model needs tables with distinct names", model=msg.model)
        if len(set(parts)) != len(parts) or any(
                not 0 <= p < max(t.parts for t in specs.values()) for p in parts):
            raise ConfigError(f"partitions {parts} are not partitions of these tables",
                              model=msg.model)
        return cls, plugin, specs, parts

    async def _install(self, msg: Message, make, *, adding: bool = False) -> dict:
        """Build the partitions of msg.model with `make(spec, part, combine)` on the thread
        pool — a big random init or a numba compile then never stalls the event loop —
        and host them. `adding`: partitions of a model this shard may already host (the
        same incarnation), placed here by a failover or a new backup."""
        existing = self.models.get(msg.model)
        if existing is not None and not (adding and existing.uid == msg.args.get("uid")):
            raise ModelExistsError(f"model {msg.model!r} already exists on shard {self.name}; "
                                   "destroy it first", model=msg.model)
        cls, plugin, specs, parts = self._new_model(msg)
        if existing is not None:
            plugin, specs = existing.plugin, existing.specs
            parts = [p for p in parts if p not in existing.parts]
        memory.refuse_over(msg.model, self.name, sum(m.nbytes for m in self.models.values()),
                           memory.partition_bytes(specs.values(), parts), self.memory_limit,
                           "its memory_limit; raise PSF_MEMORY_LIMIT for more")
        combiners = {**aggregate.BUILTIN, **cls.aggregators}

        def build() -> dict[int, dict[str, Partition]]:
            built = {}
            for p in parts:
                built[p] = {t.name: make(t, p, combiners[t.aggregate])
                            for t in specs.values() if p < t.parts}
                for partition in built[p].values():
                    aggregate.compile_for(partition.data, partition.combine)
                plugin.on_partition(ShardView(msg.model, self.name, p, built[p]))
            return built

        built = await asyncio.get_running_loop().run_in_executor(self._pool, build)
        current = self.models.get(msg.model)
        if current is not existing:  # created or destroyed meanwhile by a concurrent request
            raise ModelExistsError(f"model {msg.model!r} changed on shard {self.name} while "
                                   "its partitions were built; try again", model=msg.model)
        if current is None:
            current = HostedModel(msg.model, str(msg.args.get("uid", "")), plugin, specs, built)
            self.models[msg.model] = current
        else:
            current.parts.update(built)
        self._set_backups(current, msg.args.get("backups", []))
        self._take_applied(msg)
        self._ops_known.update(cls.udfs)
        return {"created": True}

    async def _create(self, msg: Message):
        return await self._install(msg, Partition.create), ()

    def _destroy(self, msg: Message):
        """Destroy the model here, or only `parts` of it (a backup whose build failed)."""
        hosted = self.models.get(msg.model)
        uid = msg.args.get("uid")
        if hosted is None or (uid is not None and uid != hosted.uid):
            return {"destroyed": False}, ()  # not this incarnation: leave it
        parts = msg.args.get("parts")
        if parts is not None:
            if not isinstance(parts, list) or not all(isinstance(p, int) for p in parts):
                raise ProtocolError("destroy's parts must be a list of partition indices")
            for part in parts:
                hosted.drop(part)
            if hosted.parts:
                return {"destroyed": True}, ()
        del self.models[msg.model]
        hosted.plugin.on_destroy()
        return {"destroyed": True}, ()

    async def _save(self, msg: Message):
        """Write the partitions asked for (default: all hosted here), each a consistent
        snapshot, with what each has applied (checkpoints need it for the replays after a
        restore)."""
        hosted = self._hosted(msg)
        path, save_id = msg.args.get("path"), msg.args.get("save_id")
        if not isinstance(path, str) or not path or not isinstance(save_id, str):
            raise ConfigError("save needs a directory path and a save id", model=msg.model)
        parts = msg.args.get("parts", sorted(hosted.parts))
        if not isinstance(parts, list) or any(p not in hosted.parts for p in parts):
            raise UnknownModelError(f"shard {self.name} does not hold partitions {parts} of "
                                    f"{msg.model!r}", model=msg.model)
        directory = Path(path)
        loop = asyncio.get_running_loop()
        records, once, pauses = [], [], []
        try:
            await loop.run_in_executor(self._pool, lambda: directory.mkdir(parents=True,
                                                                             exist_ok=True))
            for part in parts:
                copies, state, pause = await self._snapshot(hosted, part)
                once.append([part, state])
                pauses.append(pause)
                records += await loop.run_in_executor(self._pool, lambda: [  # noqa: B023
                    files.write_partition(directory, table, part, save_id, data).model_dump()
                    for table, data in copies.items()])
        except (OSError, ValueError) as e:
            raise StorageError(f"cannot save model {msg.model!r} to {directory}: "
                               f"{getattr(e, 'strerror', None) or e}", model=msg.model) from None
        return {"files": records, "applied": once, "pause": max(pauses, default=0.0)}, ()

    def _reader(self, msg: Message):
        """make(spec, part, combine) reading partitions from the save `msg` names."""
        path, listed = msg.args.get("path"), msg.args.get("files")
        if not isinstance(path, str) or not path or not isinstance(listed, list):
            raise ConfigError(f"{msg.op} needs a directory path and the manifest's files",
                              model=msg.model)
        try:
            records = {(r.table, r.part): r for r in map(files.FileRecord.model_validate, listed)}
        except (ValueError, TypeError) as e:
            raise StorageError(f"the manifest's file list is malformed: {e}",
                               model=msg.model) from None
        directory = Path(path)

        def read(spec: TableSpec, part: int, combine) -> Partition:
            record = records.get((spec.name, part))
            if record is None:
                raise StorageError(f"the save in {directory} has no file for partition {part} "
                                   f"of table {spec.name!r}", model=msg.model)
            try:
                data = files.read_partition(directory, record, spec.dtype, spec.part_shape(part))
            except StorageError as e:
                raise StorageError(e.message, model=msg.model) from None
            return Partition(spec, part, data, combine)
        return read

    async def _load(self, msg: Message):
        await self._install(msg, self._reader(msg))
        return {"loaded": True}, ()

    def _stats_args(self) -> dict:
        return {
            "name": self.name, "address": self.address, "pid": os.getpid(),
            "bytes": sum(m.nbytes for m in self.models.values()),
            "models": {n: {"bytes": m.nbytes, "parts": sorted(m.parts)} for n, m in self.models.items()},
            "ops": dict(self.requests.arrivals), "requests": self.requests.summary(),
            "udf_seconds": dict(self.udf_seconds),
            "duplicates": self.once.duplicates, "stale": self.once.stale,
            "replica_misses": self.replica_misses,
            "connections": self.traffic.connections,
            "bytes_in": self.traffic.bytes_in, "bytes_out": self.traffic.bytes_out,
            "memory_limit": self.memory_limit, "kernels": aggregate.compiled(),
            "warm": self._warm is not None and self._warm.done(),
            "once": {"entries": len(self.once), "bytes": self.once.nbytes},
            "rss": resident_bytes(),
            "metrics": self.metrics.address if self.metrics is not None else None,
        }

    def _metrics_snapshot(self) -> dict:
        """What a scrape of the metrics endpoint shows: the stats and the histograms."""
        return {**self._stats_args(), "latency": self.requests.histograms()}

    def _stats(self, msg: Message):
        return self._stats_args(), ()

    def _shutdown(self, msg: Message):
        """Stop serving, after this reply has gone out (whoever started the shard is done
        with it; a shard otherwise outlives its master by `master_grace` seconds)."""
        log.info("shard %s: shutdown requested", self.name)
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.stop()))
        return {"stopping": True}, ()

