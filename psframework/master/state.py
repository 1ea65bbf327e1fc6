"""The master's catalog on disk (`state_dir`), so that a restarted master knows what the
one before it knew: the models (tables, placement, replicas, incarnations, checkpoints)
and the shards (names and addresses). Written atomically after every change; a
restarted master waits `heartbeat_timeout` for each known shard's beats as if it had just
heard from it, so shards that died meanwhile fail over as usual."""

from __future__ import annotations

import json
import os
from pathlib import Path

from psframework.errors import StorageError

__all__ = ["CATALOG", "write_state", "read_state"]

CATALOG = "catalog.json"
FORMAT = 1


def write_state(directory: Path, state: dict) -> None:
    """Replace DIR/catalog.json with `state`, durably (temporary file, fsync, rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{CATALOG}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / CATALOG)


def read_state(directory: Path) -> dict | None:
    """The catalog a master wrote under `directory`, or None if there is none yet."""
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
    return raw

