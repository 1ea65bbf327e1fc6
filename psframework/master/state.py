"""The master's catalog on disk (`state_dir`), so that a restarted master knows what the
one before it knew: the models (tables, placement, replicas, incarnations, checkpoints)
and the shards (names and addresses). Written atomically after every change; a
restarted master waits `heartbeat_timeout` for each known shard's beats as if it had just
heard from it, so shards that died meanwhile fail over as usual."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from psframework.errors import ConfigError, StorageError
from psframework.master.catalog import ModelEntry, ServerInfo

log = logging.getLogger("psframework.master")

__all__ = ["CATALOG", "write_state", "read_state"]

CATALOG = "catalog.json"
FORMAT = 1


def write_state(directory: Path, ids: int, rotation: int, servers: dict[str, ServerInfo],
                models: dict[str, ModelEntry]) -> None:
    """Replace DIR/catalog.json, durably (temporary file, fsync, rename); a failure is
    logged (the master serves on; its next change tries again)."""
    state = {"format": FORMAT, "ids": ids, "rotation": rotation,
             "servers": [{"name": i.name, "address": i.address, "machine": i.machine,
                          "memory": i.memory, "memory_limit": i.memory_limit}
                         for i in servers.values()],
             "models": [e.to_state() for e in models.values()]}
    tmp = directory / f".{CATALOG}.tmp{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / CATALOG)
    except OSError as e:
        log.error("cannot write the master's state to %s: %s", directory, e)


def read_state(directory: Path) -> tuple[int, int, dict[str, ServerInfo],
                                          dict[str, ModelEntry]] | None:
    """(ids, rotation, servers, models) as a master wrote them under `directory` — the
    servers as if just heard from — or None if there is none yet."""
    path = directory / CATALOG
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read the master's state {path}: {e}; move it away to "
                           "start with an empty catalog") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StorageError(f"{path} is not a catalog this master can read (format "
                           f"{raw.get('format') if isinstance(raw, dict) else '?'})")
    now = time.monotonic()
    try:
        servers = {s["name"]: ServerInfo(last_seen=now, **s) for s in raw["servers"]}
        models = {e.name: e for e in map(ModelEntry.from_state, raw["models"])}
        return int(raw["ids"]), int(raw["rotation"]), servers, models
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise StorageError(f"{path} is malformed ({e}); move it away to start with an empty "
                           "catalog") from None
