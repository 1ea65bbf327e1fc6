"""What the master does when a shard is declared dead, for every model with a copy there:

1. Each partition whose primary died gets a new one: its first live backup is promoted;
   without a backup, a live shard (the one holding least) restores it from the model's
   latest checkpoint, with what the checkpoint had applied, so that replays dedupe;
   without either, the partition is lost, and said so.
2. Primaries are told their new backup lists — a primary forwarding a write to the dead
   backup stops waiting for it then, and acknowledges the write.
3. In the background, partitions with fewer copies than `replicas` get a new backup,
   copied from their primary (`copy_to`) onto a live shard that holds no copy yet.

A shard that registers later (a replacement) gets the backups still missing, and the
partitions that lost every copy while no shard could take them, from their checkpoint.

Clients whose requests hit the dead shard look the model up again and retry there
(client.core); the placement changes, the model's incarnation (uid) does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from psframework.errors import PSError
from psframework.master.catalog import ModelEntry
from psframework.storage import files, memory

if TYPE_CHECKING:
    from psframework.master.server import Master

log = logging.getLogger("psframework.master")

__all__ = ["Failover"]


class Failover:
    def __init__(self, master: "Master") -> None:
        self.master = master
        self._rebuilding: dict[str, asyncio.Task] = {}  # model name -> its backups being built

    def _alive(self, shard: str) -> bool:
        info = self.master.servers.get(shard)
        return info is not None and info.alive

    def _least_loaded(self, exclude: set[str]) -> str | None:
        """The live shard outside `exclude` that holds the fewest bytes of partitions."""
        m = self.master
        live = [s for s in m.alive() if s not in exclude]
        if not live:
            return None
        return min(live, key=lambda s: (sum(e.bytes_on(s) for e in m.models.values()), s))

    async def shard_died(self, dead: str) -> None:
        m = self.master
        async with m.lock:
            for entry in list(m.models.values()):
                if dead in entry.shards():
                    try:
                        await self._recover(entry, dead)
                    except PSError as e:
                        log.error("failover of model %s after %s died failed: %s",
                                  entry.name, dead, e)
            m.persist()
        for entry in list(m.models.values()):
            if entry.degraded():
                self.rebuild(entry)

    async def _recover(self, entry: ModelEntry, dead: str) -> None:
        touched: set[str] = set()  # primaries whose backups changed
        for p, primary in enumerate(entry.placement):
            backups = [b for b in entry.backups[p] if b != dead and self._alive(b)]
            if backups != entry.backups[p]:
                touched.add(primary)
            entry.backups[p] = backups
            if primary != dead or p in entry.lost:
                continue
            if backups:
                entry.placement[p] = backups.pop(0)
                touched.add(entry.placement[p])
                entry.recoveries += 1
                log.warning("partition %d of %s: backup %s promoted to primary (%s died)",
                            p, entry.name, entry.placement[p], dead)
            else:
                entry.lost.append(p)  # restored just below, if there is a checkpoint
                if entry.checkpoint is None:
                    log.error("partition %d of model %s is lost with shard %s: it had no "
                              "backup and the model no checkpoint; load a saved copy", p,
                              entry.name, dead)
        await self._bring_back(entry)
        await asyncio.gather(*(self.send_backups(entry, s) for s in touched
                               if s != dead and self._alive(s)), return_exceptions=True)

    async def restore_lost(self) -> None:
        """Bring back, on a live shard, the partitions that lost every copy while no shard
        could take them, from their model's checkpoint (a shard registered)."""
        m = self.master
        async with m.lock:
            for entry in list(m.models.values()):
                await self._bring_back(entry)
                if entry.degraded():
                    self.rebuild(entry)
            m.persist()

    async def _bring_back(self, entry: ModelEntry) -> None:
        """Restore `entry`'s partitions that have no live copy from its checkpoint, on the
        live shard holding least; with no live shard, they wait for one to register."""
        if not entry.lost or entry.checkpoint is None:
            return
        target = self._least_loaded(set())
        if target is None:
            log.error("partitions %s of model %s have no live copy: they come back from the "
                      "model's checkpoint when a shard registers", entry.lost, entry.name)
            return
        parts, entry.lost = sorted(entry.lost), []
        for p in parts:
            entry.placement[p], entry.backups[p] = target, []
        await self._restore(entry, target, parts)

    async def _restore(self, entry: ModelEntry, target: str, parts: list[int]) -> None:
        """Have `target` load `parts` of `entry` from its latest checkpoint."""
        m = self.master
        ckpt = entry.checkpoint
        assert ckpt is not None  # _bring_back restores only models with a checkpoint
        try:
            manifest = files.read_manifest(ckpt["path"])
            if manifest.save_id != ckpt["save_id"]:
                log.warning("checkpoint of %s in %s was replaced meanwhile; restoring the "
                            "newer one", entry.name, ckpt["path"])
            await m.shard_request(target, "adopt", entry.name, {
                **m.model_args(entry), "parts": parts, "path": ckpt["path"],
                "files": [r.model_dump() for r in manifest.files if r.part in parts],
                "applied": [pair for pair in manifest.once if pair[0] in parts]})
        except PSError as e:
            entry.lost.extend(parts)
            log.error("partitions %s of model %s could not be restored from %s on %s: %s",
                      parts, entry.name, ckpt["path"], target, e)
            return
        entry.recoveries += len(parts)
        log.warning("partitions %s of %s restored on %s from the checkpoint of %.0fs ago "
                    "(pushes acknowledged since then are lost)", parts, entry.name, target,
                    time.time() - ckpt["time"])

    async def send_backups(self, entry: ModelEntry, shard: str) -> None:
        """Tell `shard` where to forward the writes of the partitions it is primary of."""
        m = self.master
        await m.shard_request(shard, "backups", entry.name, {
            "uid": entry.uid, "backups": m.backup_pairs(entry, shard)})

    def rebuild(self, entry: ModelEntry) -> None:
        """Give the degraded partitions of `entry` new backups, in the background."""
        task = self._rebuilding.get(entry.name)
        if task is None or task.done():
            self._rebuilding[entry.name] = self.master.spawn(self._rebuild(entry))

    async def _rebuild(self, entry: ModelEntry) -> None:
        m = self.master
        for p in entry.degraded():
            if m.models.get(entry.name) is not entry:
                return  # destroyed meanwhile
            while len(entry.backups[p]) < entry.replicas - 1 and p not in entry.lost:
                primary = entry.placement[p]
                target = self._least_loaded({primary, *entry.backups[p]})
                if target is None or not self._alive(primary):
                    log.warning("partition %d of %s stays without a backup: no other live "
                                "shard", p, entry.name)
                    break
                # bounded, but patient with a big partition (it streams at >= 20 MB/s)
                timeout = m.settings.request_timeout + memory.partition_bytes(
                    entry.tables, [p]) / 20e6
                try:
                    await m.shard_request(primary, "copy_to", entry.name, {
                        **m.model_args(entry), "part": p,
                        "address": m.servers[target].address}, timeout=timeout)
                except PSError as e:
                    log.warning("could not build a backup of partition %d of %s on %s: %s",
                                p, entry.name, target, e)
                    try:  # what the target got of it goes
                        await m.shard_request(target, "destroy", entry.name,
                                              {"uid": entry.uid, "parts": [p]})
                    except PSError:
                        pass
                    break
                entry.backups[p].append(target)
                log.info("partition %d of %s has a new backup on %s", p, entry.name, target)
            m.persist()
