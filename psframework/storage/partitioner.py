"""Which partition holds which index along the partitioned axis, and where inside it.

`range` gives each partition one contiguous block (balanced to within one index);
`cyclic` deals indices out round-robin (index i lives in partition i % P at i // P).
Both are pure functions of (kind, length, parts), so every client and shard computes
the same answer without asking anyone.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["Partitioner", "PARTITIONERS"]

PARTITIONERS = ("range", "cyclic")


@dataclass(frozen=True)
class Partitioner:
    kind: str
    length: int
    parts: int

    def __post_init__(self) -> None:
        if self.kind not in PARTITIONERS:
            raise ValueError(f"partitioner must be one of {PARTITIONERS}, not {self.kind!r}")
        if self.parts < 1 or self.length < 0:
            raise ValueError("need parts >= 1 and length >= 0")

    @cached_property
    def starts(self) -> np.ndarray:
        """Range partitioning: partition p holds [starts[p], starts[p + 1])."""
        return np.array([p * self.length // self.parts for p in range(self.parts + 1)],
                        dtype=np.int64)

    @cached_property
    def _bounds(self) -> list[int]:
        return self.starts.tolist()

    def size(self, part: int) -> int:
        if self.kind == "range":
            return int(self.starts[part + 1] - self.starts[part])
        return (self.length - part + self.parts - 1) // self.parts

    def indices(self, part: int) -> np.ndarray | slice:
        """The global indices partition `part` holds, in local order (a slice if regular)."""
        if self.kind == "range":
            return slice(int(self.starts[part]), int(self.starts[part + 1]))
        return slice(part, self.length, self.parts)

    def split(self, idx: np.ndarray) -> list[tuple[int, np.ndarray | slice, np.ndarray]]:
        """Group global indices by partition: [(part, positions in idx, local indices)].

        `positions` is a slice when the request's partitions never decrease along it —
        all its indices in one partition, or indices in ascending order over a range
        partitioner (`np.arange`) — so the common cases cost views, not index arrays and
        copies. Otherwise (runs out of partition order, or ascending indices over a
        cyclic partitioner, whose partitions alternate) the positions are index arrays
        and each partition's local indices a copy, in request order."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.parts == 1:
            return [(0, slice(None), idx)]
        if idx.size == 1:  # one index (a hot path): no vectorised set-up
            i = int(idx[0])
            if self.kind == "range":
                part = bisect.bisect_right(self._bounds, i) - 1
                return [(part, slice(None), idx - self._bounds[part])]
            return [(i % self.parts, slice(None), idx // self.parts)]
        if self.kind == "range":
            owner = np.searchsorted(self.starts, idx, side="right") - 1
            local = idx - self.starts[owner]
        else:
            owner = idx % self.parts
            local = idx // self.parts
        if owner.size and owner[0] == owner[-1] and (owner == owner[0]).all():
            return [(int(owner[0]), slice(None), local)]
        counts = np.bincount(owner, minlength=self.parts)
        runs = owner.size < 2 or bool((owner[1:] >= owner[:-1]).all())  # sorted by partition
        order = None if runs else np.argsort(owner, kind="stable")
        out: list[tuple[int, np.ndarray | slice, np.ndarray]] = []
        begin = 0
        for part, count in enumerate(counts):
            if count:
                pos = slice(begin, begin + count) if order is None else order[begin:begin + count]
                out.append((part, pos, local[pos]))
                begin += count
        return out
