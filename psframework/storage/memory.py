"""How much memory partitions take, and how much a shard may give them: one place for
the numbers the master checks before placing a model and the shard checks before
allocating it."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterable

from psframework.errors import ConfigError
from psframework.storage.table import TableSpec

__all__ = ["DEFAULT_SHARE", "physical_memory", "machine_id", "partition_bytes", "refuse_over"]

DEFAULT_SHARE = 0.5  # of a machine's memory, for its shards' partitions, unless they set a limit


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0


def machine_id() -> str:
    """Names this machine (and boot): shards that share it share its memory."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def partition_bytes(tables: Iterable[TableSpec], parts: Iterable[int]) -> int:
    """Bytes partitions `parts` of `tables` hold together."""
    tables = list(tables)
    return sum(t.part_bytes(p) for p in parts for t in tables if p < t.parts)


def refuse_over(model: str, shard: str, held: int, need: int, limit: int, why: str) -> None:
    """ConfigError unless `need` more bytes fit beside `held` within `limit`."""
    if held + need > limit:
        raise ConfigError(
            f"model {model!r} needs {_size(need)} on shard {shard}, which holds {_size(held)} "
            f"of its {_size(limit)} ({why}); make the model smaller, destroy others or add "
            "shards", model=model, shard=shard)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
