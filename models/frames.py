"""ALS-style recommendation frames: `top_k`'s answer as the Arrow column of
`array<struct<item, rating>>` that pyspark's ALS returns, built from numpy in one go; ids
are int32, as ALS's (Spark ints)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["ranked_lists", "recommendations"]


def ranked_lists(targets: np.ndarray, scores: np.ndarray, names: tuple[str, str]) -> pa.Array:
    """Rows of (target, score) structs from top_k's n × k answer, best first; entries
    that scored -inf (left out) are dropped, so a row may be shorter than k."""
    keep = np.isfinite(scores)
    offsets = np.zeros(len(targets) + 1, np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    pairs = pa.StructArray.from_arrays(
        [pa.array(targets[keep].astype(np.int32)), pa.array(scores[keep].astype(np.float32))],
        names=list(names))
    return pa.ListArray.from_arrays(pa.array(offsets), pairs)


def recommendations(ids: np.ndarray, targets: np.ndarray, scores: np.ndarray,
                    names: tuple[str, str]) -> pa.RecordBatch:
    """ALS's recommendation rows: (names[0] = ids, recommendations = each id's ranked
    (names[1], rating) structs)."""
    return pa.RecordBatch.from_arrays(
        [pa.array(np.asarray(ids, np.int32)), ranked_lists(targets, scores, (names[1], "rating"))],
        names=[names[0], "recommendations"])
