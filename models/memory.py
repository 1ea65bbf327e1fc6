"""Memory a model's work may take, checked before it is taken: a step that would not fit
fails with `NotEnoughMemoryError` naming the step, the bytes it needs, the bytes there
are, and what to change, instead of a process the kernel kills.

    ensure_memory(rows * 40, "FMPair epoch 3, Spark partition 7",
                  "use more partitions (spark.default.parallelism)")
"""

from __future__ import annotations

import os
import resource

__all__ = ["NotEnoughMemoryError", "available_memory", "ensure_memory", "from_job_failure",
           "size"]


class NotEnoughMemoryError(MemoryError):
    """A step of a model's work needs more memory than its process can have."""


def available_memory() -> int:
    """Bytes this process may still allocate: the machine's MemAvailable, capped by an
    address-space limit if one is set (Spark sets one from spark.executor.pyspark.memory)."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if free is None:
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
            return 1 << 62
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            used = 0
        free = min(free, max(limit - used, 0))
    return free


def ensure_memory(need: int, where: str, fix: str) -> None:
    """NotEnoughMemoryError unless `need` bytes are available here."""
    have = available_memory()
    if need > have:
        raise NotEnoughMemoryError(f"{where} needs {size(need)} but {size(have)} is available; "
                                   f"{fix}")


def size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def from_job_failure(error: BaseException, step: str) -> NotEnoughMemoryError | None:
    """The NotEnoughMemoryError to raise for a Spark job of `step` that failed for lack
    of memory on an executor, or None if it failed for another reason."""
    text = str(error)
    for line in text.splitlines():
        if "NotEnoughMemoryError:" in line:
            return NotEnoughMemoryError(line.split("NotEnoughMemoryError:", 1)[1].strip())
    if "MemoryError" in text:
        return NotEnoughMemoryError(f"{step}: an executor ran out of memory; give executors "
                                    "more memory or use more partitions")
    if "exited unexpectedly (crashed)" in text or "exit code 137" in text:
        return NotEnoughMemoryError(f"{step}: an executor's Python worker died without a "
                                    "Python error, as when the kernel's out-of-memory killer "
                                    "ends it (the system log says); give executors more "
                                    "memory or use more partitions")
    return None
