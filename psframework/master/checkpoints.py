"""Checkpoints: per model, on demand (`checkpoint` op) or every `checkpoint_interval`
seconds (the model's own, else the cluster's), under `checkpoint_dir/<name>-<uid>`. Each
is a save of consistent per-partition snapshots with what every partition had applied
(the shards' `save`), published by its manifest's rename, so a checkpoint replaces the
model's previous one as a whole once it is complete; the master keeps the latest in the
model's catalog entry, for failover to restore from."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from psframework.errors import ConfigError, PSError
from psframework.master.catalog import ModelEntry

if TYPE_CHECKING:
    from psframework.master.server import Master

log = logging.getLogger("psframework.master")

__all__ = ["Checkpoints"]

TICK = 0.5  # seconds between looks at which checkpoints are due


class Checkpoints:
    def __init__(self, master: "Master") -> None:
        self.master = master
        self._running: dict[str, asyncio.Task] = {}  # model name -> its checkpoint being taken

    def directory(self, entry: ModelEntry) -> Path:
        root = self.master.settings.checkpoint_dir
        if root is None:
            raise ConfigError("no checkpoint_dir is set on the master; start it with "
                              "--checkpoint-dir DIR (a directory every server can reach)",
                              model=entry.name)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", entry.name)[:80]
        return (root / f"{safe}-{entry.uid}").resolve()

    async def take(self, entry: ModelEntry) -> dict:
        """Checkpoint `entry` now; returns where, its save id, when, and the longest time
        one partition's writes were held."""
        m = self.master
        directory = self.directory(entry)
        started = time.time()
        save_id, pause = await m.saves.write(entry, directory)
        entry.checkpoint = {"path": str(directory), "save_id": save_id, "time": started,
                            "pause": round(pause, 6)}
        m.persist()
        log.info("checkpointed %s to %s in %.2fs (writes held at most %.1f ms per partition)",
                 entry.name, directory, time.time() - started, pause * 1e3)
        return entry.checkpoint

    async def run(self) -> None:
        """Checkpoint every model whose interval is due, one checkpoint per model at once."""
        m = self.master
        while True:
            await asyncio.sleep(TICK)
            if m.settings.checkpoint_dir is None:
                continue
            now = time.time()
            for entry in list(m.models.values()):
                interval = entry.checkpoint_interval or m.settings.checkpoint_interval
                last = entry.checkpoint["time"] if entry.checkpoint else entry.created
                running = self._running.get(entry.name)
                if (interval and now - last >= interval and not entry.lost
                        and (running is None or running.done())):
                    self._running[entry.name] = m.spawn(self._quietly(entry))

    async def _quietly(self, entry: ModelEntry) -> None:
        try:
            await self.take(entry)
        except PSError as e:
            log.warning("checkpoint of %s failed (the previous one stays): %s", entry.name, e)
