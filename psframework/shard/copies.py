"""How a shard applies writes and keeps the copies of its partitions in step: the
partition's write gate, the lease, forwarding to backups (and to backups being built),
consistent snapshots, and the master's orders that move copies around (`adopt`,
`backups`, `fill`, `copy_to`). See shard.replicas for the gate and the forwarder, and
docs/fault-tolerance.md for the guarantees.

`Copies` is a part of `Shard` (its base class): it uses the shard's settings, models,
exactly-once window, forwarder, thread pool and request helpers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from psframework.errors import MovedError, ProtocolError, ShapeError, UnknownModelError
from psframework.protocol import Message
from psframework.shard.hosted import HostedModel
from psframework.shard.replicas import Gate
from psframework.storage.table import Partition, TableSpec
from psframework.transport.ratelimit import RateLimited

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from psframework.config import Settings
    from psframework.shard.replicas import Forwarder
    from psframework.transport.once import OnceLog

log = logging.getLogger("psframework.shard")
_misses = RateLimited(log)

__all__ = ["Copies", "pairs"]


class Copies:
    if TYPE_CHECKING:  # what Shard, the class this is a part of, provides
        settings: Settings
        name: str
        models: dict[str, HostedModel]
        once: OnceLog
        forwarder: Forwarder
        replica_misses: int
        _pool: ThreadPoolExecutor
        _lease_until: float | None

        @staticmethod
        def _part(msg: Message) -> int: ...
        @staticmethod
        def _arrays(msg: Message, n: int) -> tuple[np.ndarray, ...]: ...
        def _hosted(self, msg: Message) -> HostedModel: ...
        def _partition(self, msg: Message) -> Partition: ...
        def _reader(self, msg: Message) -> Callable[..., Any]: ...
        async def _install(self, msg: Message, make: Callable[..., Any], *,
                           adding: bool = False) -> dict: ...

    def _write(self, hosted: HostedModel, msg: Message, apply):
        """Apply a write (`apply(msg)`) through its partition's gate, and on the backups
        too when this shard is the partition's primary (see shard.replicas)."""
        part = self._part(msg)
        replica = msg.args.get("replica") is True  # forwarded by the primary
        if not replica:
            self._check_lease(msg, part)
        gate = hosted.gate(part)
        copies = not replica and (hosted.backups.get(part) or hosted.building.get(part))
        if gate.is_open and not copies:
            result = apply(msg)  # the common case: no copy to keep, no snapshot running
            if inspect.isawaitable(result):
                gate.active += 1
                return self._leaving(gate, result)
            return result
        return self._gated(hosted, msg, part, gate, apply, replica)

    @staticmethod
    async def _leaving(gate: Gate, result):
        try:
            return await result
        finally:
            gate.leave()

    async def _gated(self, hosted: HostedModel, msg: Message, part: int, gate: Gate, apply,
                     replica: bool):
        await gate.enter()
        try:
            # the backups as of now: a snapshot that held the gate may have added one
            backups = () if replica else tuple(hosted.backups.get(part, ()))
            result = apply(msg)  # a request that fails here goes to no backup
            if not replica:
                self._forward_to_building(hosted, msg, part)
            if not backups:
                return await result if inspect.isawaitable(result) else result
            sent = self.forwarder.forward(msg, hosted.uid, part, list(backups))
            if inspect.isawaitable(result):
                result, refused = await asyncio.gather(result, sent)
            else:
                refused = await sent
            for err in refused:
                # a backup refused what the primary applied (a UDF whose server-side
                # cache the backup lacks, having been built after the batch began): the
                # copies differ by this one write, which is counted and logged
                self.replica_misses += 1
                _misses.warning("a backup of partition %d of %s did not apply %s: %s",
                                part, msg.model, msg.op, err)
            return result
        finally:
            gate.leave()

    def _forward_to_building(self, hosted: HostedModel, msg: Message, part: int) -> None:
        """Send a write to the backups of `part` still being built, without waiting: they
        queue it behind their copy, and the copy's end waits for it (see _copy_to)."""
        for address, pending in hosted.building.get(part, {}).items():
            pending.add(asyncio.ensure_future(self.forwarder.forward(msg, hosted.uid, part,
                                                                     [address])))

    def _backups_of(self, model: str, uid: str, part: int) -> list[str]:
        """Where writes of `part` go besides here: its backups, and those being built."""
        hosted = self.models.get(model)
        if hosted is None or hosted.uid != uid:
            return []
        return [*hosted.backups.get(part, ()), *hosted.building.get(part, ())]

    def _check_lease(self, msg: Message, part: int) -> None:
        """Refuse writes while this shard may have been declared dead: the master may have
        moved its partitions meanwhile, and a write here would be lost."""
        if self._lease_until is not None and time.monotonic() > self._lease_until:
            raise MovedError(
                f"shard {self.name} has not reached the master for a while, so partition "
                f"{part} of {msg.model!r} may have moved; look the model up again",
                model=msg.model)

    async def _snapshot(self, hosted: HostedModel, part: int,
                        at_cut=None) -> tuple[dict, dict, float]:
        """Partition `part`'s tables and exactly-once state as of one moment between
        writes: its gate closes, the arrays are copied (on the pool), it opens again.
        The copies' memory is allocated and touched first, with the gate open, so that
        the pause is a plain memory copy, not the page faults of fresh memory. `at_cut()`
        runs at the moment of the copy, before any later write.
        Returns (copies, once state, seconds the partition's writes were held)."""
        loop = asyncio.get_running_loop()
        tables = hosted.parts[part]
        copies = await loop.run_in_executor(self._pool, lambda: {
            name: _touched(p.data) for name, p in tables.items()})
        gate = hosted.gate(part)
        await gate.close()
        started = time.perf_counter()
        try:
            def copy() -> None:
                for name, p in tables.items():
                    np.copyto(copies[name], p.data)
            await loop.run_in_executor(self._pool, copy)
            if at_cut is not None:
                at_cut()
            return copies, self.once.export(hosted.name, part), time.perf_counter() - started
        finally:
            gate.open()

    # -- the master's orders --------------------------------------------------------------
    async def _adopt(self, msg: Message):
        """Host more partitions of a model: read from a checkpoint (`path`, `files`) when
        its primary died without a backup, or empty, to be filled as a new backup."""
        if msg.args.get("path") is not None:
            make = self._reader(msg)
        else:
            def make(spec: TableSpec, part: int, combine) -> Partition:
                return Partition(spec, part, np.zeros(spec.part_shape(part), spec.dtype), combine)
        building = msg.args.get("building") is True
        hosted = self.models.get(msg.model)
        if building and hosted is not None and hosted.uid == msg.args.get("uid"):
            for p in msg.args.get("parts") or ():  # left over from a build that failed
                hosted.drop(p)
        await self._install(msg, make, adding=True)
        if building:  # forwarded writes wait until the copy is in (the last fill)
            hosted = self.models[msg.model]
            for p in msg.args.get("parts") or ():
                await hosted.gate(p).close()
        return {"adopted": True}, ()

    def _backups(self, msg: Message):
        """Set where the writes of partitions this shard is the primary of are forwarded."""
        self._set_backups(self._hosted(msg), msg.args.get("backups"))
        return {}, ()

    def _set_backups(self, hosted: HostedModel, value: object) -> None:
        for part, addresses in pairs(value, "backups"):
            if not (isinstance(addresses, list) and all(isinstance(a, str) for a in addresses)):
                raise ProtocolError("backups must be [partition, [address, ...]] pairs")
            if addresses:
                hosted.backups[part] = addresses
            else:
                hosted.backups.pop(part, None)

    def _fill(self, msg: Message):
        """Write rows [offset, offset + n) of a partition being built as a backup; the
        last fill brings the primary's exactly-once state and lets the writes forwarded
        meanwhile through."""
        hosted = self._hosted(msg)
        part = self._part(msg)
        if msg.arrays:
            (values,) = self._arrays(msg, 1)
            partition = self._partition(msg)
            offset = msg.args.get("offset")
            if (not isinstance(offset, int) or values.dtype != partition.data.dtype
                    or values.shape[1:] != partition.data.shape[1:]
                    or not 0 <= offset <= partition.data.shape[0] - values.shape[0]):
                raise ShapeError("fill needs an offset and rows that fit the partition")
            partition.data[offset:offset + values.shape[0]] = values
        if msg.args.get("last") is True:
            self._take_applied(msg)
            gate = hosted.gate(part)
            if not gate.is_open:
                gate.open()
        return {}, ()

    def _take_applied(self, msg: Message) -> None:
        """Take over what the copy in `msg` had applied (its exactly-once state)."""
        for part, state in pairs(msg.args.get("applied", []), "applied"):
            self.once.adopt(msg.model, part, state)

    async def _copy_to(self, msg: Message):
        """Build a backup of partition `part` on the shard at `address`, in the
        background: the backup makes the partition and holds its writes; here the
        partition is snapshotted (its writes held only for the copy), and from that cut on
        every write is also sent to the backup without waiting; the snapshot follows, in
        chunks, with the exactly-once state as of the cut; then the backup applies what it
        held, and writes are forwarded to it like to any backup — this op answers once the
        writes sent meanwhile have been applied there, so all it acknowledged is there."""
        hosted = self._hosted(msg)
        part, address = self._part(msg), msg.args.get("address")
        if part not in hosted.parts or not isinstance(address, str):
            raise UnknownModelError(f"shard {self.name} cannot copy partition {part} of "
                                    f"{msg.model!r} to {address!r}", model=msg.model)
        s = self.settings
        started = time.perf_counter()
        conn = await self.forwarder.connection(address)
        await conn.request("adopt", msg.model, {
            "uid": hosted.uid, "type": msg.args.get("type"), "config": msg.args.get("config"),
            "tables": msg.args.get("tables"), "parts": [part], "building": True},
            timeout=s.request_timeout)
        pending: set[asyncio.Future] = set()
        building = hosted.building.setdefault(part, {})
        try:
            copies, state, pause = await self._snapshot(
                hosted, part, at_cut=lambda: building.__setitem__(address, pending))
            for table, data in copies.items():
                step = max(1, s.chunk_bytes // max(1, data[:1].nbytes))
                for at in range(0, data.shape[0], step):
                    await conn.request("fill", msg.model, {
                        "uid": hosted.uid, "table": table, "part": part, "offset": at},
                        (data[at:at + step],), timeout=s.request_timeout)
            del copies
            await conn.request("fill", msg.model, {
                "uid": hosted.uid, "part": part, "last": True, "applied": [[part, state]]},
                timeout=s.request_timeout)
            hosted.backups.setdefault(part, [])
            if address not in hosted.backups[part]:
                hosted.backups[part].append(address)  # from now on, as any backup
            building.pop(address, None)
            for refused in await asyncio.gather(*pending):
                self.replica_misses += len(refused)
        finally:
            building.pop(address, None)
            if not building:
                hosted.building.pop(part, None)
        return {"seconds": time.perf_counter() - started, "pause": pause}, ()


def pairs(value: object, what: str) -> list[tuple[int, object]]:
    """[[partition, value], ...] from a peer, checked."""
    if not isinstance(value, list) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], int)
            and not isinstance(v[0], bool) for v in value):
        raise ProtocolError(f"{what} must be a list of [partition, value] pairs")
    return [(v[0], v[1]) for v in value]


def _touched(like: np.ndarray) -> np.ndarray:
    """An array like `like` whose pages are all mapped already (written once)."""
    out = np.empty_like(like)
    out.reshape(-1).view(np.uint8)[::4096] = 0
    return out
