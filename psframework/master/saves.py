"""Saves (and checkpoints, which are saves the master asks for): the primaries write a
consistent snapshot of each of their partitions, with what it had applied, under fresh
names; the master checks that every partition is there and publishes them with the
manifest's rename (storage.files). One save at a time per directory; whatever is not the
published save is swept away afterwards, so a failed save leaves the previous one whole."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from psframework.errors import StorageError
from psframework.master.catalog import ModelEntry
from psframework.storage import files
from psframework.storage.table import TableSpec

if TYPE_CHECKING:
    from psframework.master.server import Master

log = logging.getLogger("psframework.master")

__all__ = ["Saves", "partitions"]


class Saves:
    def __init__(self, master: "Master") -> None:
        self.master = master
        self._locks: dict[Path, asyncio.Lock] = {}  # one save at a time per directory

    async def write(self, entry: ModelEntry, directory: Path) -> tuple[str, float]:
        """Save `entry` under `directory`; returns the save id and the longest time one
        partition's writes were held for its snapshot."""
        lock = self._locks.setdefault(directory, asyncio.Lock())
        async with lock:
            save_id = secrets.token_hex(8)
            try:
                directory.mkdir(parents=True, exist_ok=True)
                if entry.lost:
                    raise StorageError(f"partitions {entry.lost} of model {entry.name!r} are "
                                       "lost: there is nothing whole to save", model=entry.name)
                replies = await self.master.on_shards(
                    entry, "save", {"path": str(directory), "save_id": save_id,
                                    "uid": entry.uid},
                    lambda shard: {"parts": entry.parts_on(shard)},
                    shards=sorted(set(entry.placement)))
                records = [files.FileRecord.model_validate(r)
                           for reply in replies for r in reply.args.get("files", [])]
                expected = partitions(entry.tables)
                if {(r.table, r.part) for r in records} != expected or len(records) != len(expected):
                    raise StorageError(f"the shards saved {len(records)} partitions of model "
                                       f"{entry.name!r}, not the {len(expected)} it has; nothing "
                                       "was published", model=entry.name)
                files.write_manifest(directory, files.Manifest(
                    format=files.FORMAT, save_id=save_id, name=entry.name, type=entry.type,
                    config=entry.config, tables=[t.to_wire() for t in entry.tables],
                    parts=len(entry.placement), files=records,
                    once=[tuple(pair) for reply in replies
                          for pair in reply.args.get("applied", [])]))
            except (OSError, ValidationError) as e:
                raise StorageError(f"cannot save model {entry.name!r} to {directory}: "
                                   f"{getattr(e, 'strerror', None) or e}", model=entry.name) from None
            finally:  # what is not the published save goes: a failed one leaves the old whole
                _sweep(directory)
        return save_id, max((r.args.get("pause", 0.0) for r in replies), default=0.0)


def _sweep(directory: Path) -> None:
    """Remove what is not part of the save published in `directory`."""
    try:
        keep = files.read_manifest(directory).save_id
    except StorageError:
        keep = None
    try:
        files.sweep(directory, keep)
    except OSError as e:
        log.warning("could not clean up %s: %s", directory, e)


def partitions(tables: list[TableSpec]) -> set[tuple[str, int]]:
    """(table, partition) of every partition a save of these tables holds."""
    return {(t.name, p) for t in tables for p in range(t.parts)}
