"""ALS-style recommendation frames: `top_k`'s answer as the Arrow column of
`array<struct<item, rating>>` that pyspark's ALS returns, built from numpy in one go."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["ranked_lists"]


def ranked_lists(targets: np.ndarray, scores: np.ndarray, names: tuple[str, str]) -> pa.Array:
    """Rows of (target, score) structs from top_k's n × k answer, best first; entries
    that scored -inf (left out) are dropped, so a row may be shorter than k."""
    keep = np.isfinite(scores)
    offsets = np.zeros(len(targets) + 1, np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    pairs = pa.StructArray.from_arrays(
        [pa.array(targets[keep].astype(np.int64)), pa.array(scores[keep].astype(np.float32))],
        names=list(names))
    return pa.ListArray.from_arrays(pa.array(offsets), pairs)
