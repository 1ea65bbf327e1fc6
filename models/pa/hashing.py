"""Feature hashing: raw features into 2^hash_bits signed buckets, the same on every worker
and in every run.

The hash is scikit-learn's `FeatureHasher` (alternate_sign=True), bit for bit: a feature
name is encoded as UTF-8 and hashed with MurmurHash3 (x86, 32 bit, seed 0) read as a
signed int h; its bucket is |h| mod 2^hash_bits and its value is multiplied by +1 if
h >= 0, else -1. A string feature counts 1; a (name, value) pair counts `value` if it is
a number and 1 under the name "name=value" if it is a string (FeatureHasher's rule);
features that fall into one bucket are summed. Unlike Python's `hash`, MurmurHash3
needs no PYTHONHASHSEED to agree across processes.

The hash runs in a numba kernel over one buffer of UTF-8 bytes and its offsets, which
is how Arrow holds a column of strings: a Spark task hashes a batch of array<string>
without a Python loop per token (`hash_arrow`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numba
import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from psframework import ConfigError

__all__ = ["murmurhash3_32", "hash_features", "hash_strings", "hash_arrow"]


@numba.njit(nogil=True, cache=True)
def _murmur(data, start, stop, seed):
    """MurmurHash3_x86_32 of data[start:stop] (uint8) as a signed 32-bit integer."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    n = stop - start
    end = start + (n // 4) * 4
    for i in range(start, end, 4):
        k = (np.int64(data[i]) | (np.int64(data[i + 1]) << 8) | (np.int64(data[i + 2]) << 16)
             | (np.int64(data[i + 3]) << 24))
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    k = np.int64(0)
    tail = n & 3
    if tail == 3:
        k ^= np.int64(data[end + 2]) << 16
    if tail >= 2:
        k ^= np.int64(data[end + 1]) << 8
    if tail >= 1:
        k ^= np.int64(data[end])
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h - (1 << 32) if h >= (1 << 31) else h


@numba.njit(nogil=True, cache=True)
def _buckets(data, starts, ends, n_features, seed, index, sign):
    """For token t = data[starts[t]:ends[t]]: its bucket and sign."""
    for t in range(starts.size):
        h = _murmur(data, starts[t], ends[t], seed)
        if h == -2147483648:  # |h| overflows int32; FeatureHasher's definition
            index[t] = (2147483647 - (n_features - 1)) % n_features
        else:
            index[t] = abs(h) % n_features
        sign[t] = 1.0 if h >= 0 else -1.0


def murmurhash3_32(key: str | bytes, seed: int = 0) -> int:
    """MurmurHash3 (x86, 32 bit) of a string's UTF-8 bytes, signed, as scikit-learn's
    `murmurhash3_32(key, seed)`."""
    data = np.frombuffer(key.encode() if isinstance(key, str) else bytes(key), np.uint8)
    return int(_murmur(data, 0, data.size, seed))


def _tokens(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, values: np.ndarray,
            row_starts: np.ndarray, hash_bits: int) -> sp.csr_matrix:
    """Rows of hashed tokens (token t: data[starts[t]:ends[t]]; row r: tokens
    row_starts[r]..row_starts[r + 1]) as CSR, duplicates summed."""
    n_features = 1 << hash_bits
    index = np.empty(starts.size, np.int64)
    sign = np.empty(starts.size, np.float32)
    _buckets(data, starts.astype(np.int64), ends.astype(np.int64), n_features, 0, index, sign)
    X = sp.csr_matrix((sign * values, index, row_starts), shape=(row_starts.size - 1, n_features))
    X.sum_duplicates()
    X.eliminate_zeros()
    return X


def hash_strings(names: list[str], values: np.ndarray, row_starts: np.ndarray,
                 hash_bits: int) -> sp.csr_matrix:
    """Hash `names` (with `values`, rows cut at row_starts) into a float32 CSR. The names
    are joined by NUL and encoded at once (a name holding NUL is encoded on its own)."""
    joined = "\0".join(names)
    if joined.count("\0") == max(len(names) - 1, 0):
        data = np.frombuffer(joined.encode(), np.uint8)
        seps = np.flatnonzero(data == 0)
        starts = np.concatenate([[0], seps + 1]) if names else np.zeros(0, np.int64)
        ends = np.concatenate([seps, [data.size]]) if names else np.zeros(0, np.int64)
    else:
        encoded = [n.encode() for n in names]
        ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        starts = ends - [len(e) for e in encoded]
        data = np.frombuffer(b"".join(encoded), np.uint8)
    return _tokens(data, starts, ends, np.asarray(values, np.float32), row_starts, hash_bits)


def hash_features(rows: Iterable, hash_bits: int) -> sp.csr_matrix:
    """Examples as FeatureHasher takes them, one per row: a mapping {name: value}, or an
    iterable of strings, or of (name, value) pairs. Returns float32 CSR, 2^hash_bits
    columns."""
    rows = rows if isinstance(rows, list) else list(rows)
    if all(type(row) in (list, tuple) for row in rows):  # lists of string features, fast
        try:
            names = [name for row in rows for name in row if name.__class__ is str]
        except TypeError:
            names = None
        if names is not None and len(names) == sum(len(row) for row in rows):
            row_starts = np.zeros(len(rows) + 1, np.int64)
            np.cumsum([len(row) for row in rows], out=row_starts[1:])
            return hash_strings(names, np.ones(len(names), np.float32), row_starts, hash_bits)
    names = []
    values: list[float] = []
    starts = [0]
    for r, row in enumerate(rows):
        if isinstance(row, (str, bytes)):
            raise ConfigError(f"example {r} is a single string; give each example as a list "
                              "of string features, a dict {name: value} or (name, value) "
                              "pairs")
        items = row.items() if isinstance(row, Mapping) else row
        for item in items:
            if isinstance(item, str):
                name, value = item, 1.0
            elif isinstance(item, tuple) and len(item) == 2:
                name, value = item
                if isinstance(value, str):
                    name, value = f"{name}={value}", 1.0
            else:
                raise ConfigError(f"example {r}: a feature must be a string or a (name, "
                                  f"value) pair, got {item!r}")
            if not isinstance(name, str):
                raise ConfigError(f"example {r}: feature names must be strings, got {name!r}")
            if value:
                names.append(name)
                values.append(float(value))
        starts.append(len(names))
    return hash_strings(names, np.array(values, np.float32), np.array(starts, np.int64),
                        hash_bits)


def hash_arrow(column: pa.Array | pa.ChunkedArray, hash_bits: int) -> sp.csr_matrix:
    """An Arrow list<string> column (Spark's array<string>), each row an example's string
    features, hashed without a Python loop per token; a null list is an empty row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.LargeListArray):
        column = column.cast(pa.list_(pa.large_string()))
    rows = column.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    strings = column.values.slice(rows[0], rows[-1] - rows[0])
    if strings.null_count:
        raise ConfigError("a feature list holds a null string; drop or fill it first")
    if pa.types.is_string(strings.type):
        strings = strings.cast(pa.large_string())
    _, offsets_buf, data_buf = strings.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64)[strings.offset:strings.offset + len(strings) + 1]
    data = (np.frombuffer(data_buf, np.uint8) if data_buf is not None
            else np.zeros(0, np.uint8))
    return _tokens(data, offsets[:-1], offsets[1:], np.ones(len(strings), np.float32),
                   rows - rows[0], hash_bits)
