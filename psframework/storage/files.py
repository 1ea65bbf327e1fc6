"""The save format: a model saved under a directory is published atomically and verified
when loaded.

    DIR/model.json                        the manifest: what the model is, and every file
    DIR/<table>.part<p>.<save id>.npy     one partition of one table, as .npy

Every save has a fresh id. Shards write their partitions under new names (each through a
temporary file, fsynced, then renamed), and report each file's size and CRC-32; the
master then writes the manifest, naming the save id and every file with its size and
checksum, and renames it over the old one. That rename is the moment of publication: a
save that fails before it (a shard killed, a full disk) leaves the previous manifest and
its files as they were, and the next save sweeps away the orphans. `read_partition`
checks a file's size and checksum before trusting a byte of it, so a truncated, corrupt
or mixed set is refused by name, never loaded. CRC-32 catches accidents (bit rot, torn
writes, a file copied from another save), not an attacker who can write the directory.
"""

from __future__ import annotations

import io
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from psframework.errors import StorageError

__all__ = ["FORMAT", "MANIFEST", "FileRecord", "Manifest", "partition_name", "write_partition",
           "read_partition", "write_manifest", "read_manifest", "sweep"]

FORMAT = 2
MANIFEST = "model.json"
_OURS = re.compile(r"^(?P<table>.+)\.part(?P<part>\d+)\.(?P<save>[0-9a-f]{16})\.npy$")
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp\d+$")  # what _publish writes before renaming
_BLOCK = 16 << 20  # bytes checksummed and written at a time


class FileRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: str
    part: int = Field(ge=0)
    file: str = Field(pattern=r"^[^/\\\x00]+\.npy$")  # a name in the save's directory, no path
    bytes: int = Field(ge=0)
    crc32: int = Field(ge=0, lt=1 << 32)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int
    save_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    name: str
    type: str
    config: dict[str, Any]
    tables: list[dict[str, Any]] = Field(min_length=1)
    parts: int = Field(ge=1)
    files: list[FileRecord]
    # per partition, what it had applied of once-only requests (transport.once's export):
    # a checkpoint restored after a failure dedupes the resends of pushes it holds
    once: list[tuple[int, dict[str, Any]]] = []


def partition_name(table: str, part: int, save_id: str) -> str:
    return f"{table}.part{part}.{save_id}.npy"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(directory: Path, name: str, chunks) -> tuple[int, int]:
    """Write `chunks` to DIR/name through a temporary file, fsync and rename it into
    place; returns (size, crc32)."""
    target = directory / name
    tmp = directory / f".{name}.tmp{os.getpid()}"
    size, crc = 0, 0
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size, crc


def write_partition(directory: str | Path, table: str, part: int, save_id: str,
                    data: np.ndarray) -> FileRecord:
    """Write one partition as `.npy` under its save's name; returns its record."""
    directory = Path(directory)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(data))
    raw = np.ascontiguousarray(data).data.cast("B")
    name = partition_name(table, part, save_id)
    size, crc = _publish(directory, name, [header.getvalue(),
                                           *(raw[i:i + _BLOCK] for i in range(0, raw.nbytes, _BLOCK))])
    return FileRecord(table=table, part=part, file=name, bytes=size, crc32=crc)


def read_partition(directory: str | Path, record: FileRecord, dtype: str,
                   shape: tuple[int, ...]) -> np.ndarray:
    """The array in `record`'s file, after checking its size, checksum, dtype and shape."""
    path = Path(directory) / record.file
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != record.bytes:
                raise StorageError(f"{path} has {size} bytes, its save recorded {record.bytes}: "
                                   "it is truncated or from another save")
            buf = np.empty(size, np.uint8)
            if f.readinto(buf.data) != size:
                raise StorageError(f"{path} changed while it was read")
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror or e}") from None
    if zlib.crc32(buf.data) != record.crc32:
        raise StorageError(f"{path} does not match the checksum its save recorded: it is "
                           "corrupt; load another save")
    head = io.BytesIO(buf[:min(size, 65536)].tobytes())
    try:
        np.lib.format.read_magic(head)
        file_shape, fortran, file_dtype = np.lib.format.read_array_header_1_0(head)
    except ValueError as e:
        raise StorageError(f"{path} is not a .npy file ({e})") from None
    if fortran or file_dtype != np.dtype(dtype) or tuple(file_shape) != tuple(shape):
        raise StorageError(f"{path} holds {file_dtype}{list(file_shape)}, expected "
                           f"{dtype}{list(shape)}")
    offset = head.tell()
    count = int(np.prod(shape))
    if offset + count * file_dtype.itemsize != size:
        raise StorageError(f"{path}: header and size disagree")
    return np.frombuffer(buf, file_dtype, count, offset).reshape(shape)


def write_manifest(directory: str | Path, manifest: Manifest) -> None:
    """Publish a save: rename its manifest over the previous one, durably."""
    directory = Path(directory)
    _publish(directory, MANIFEST, [manifest.model_dump_json(indent=2).encode()])
    _fsync_dir(directory)


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of the save under `directory`, validated; StorageError otherwise."""
    path = Path(directory) / MANIFEST
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StorageError(f"{directory} holds no saved model (no {MANIFEST}); pass the "
                           "directory that save() wrote") from None
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read {path}: {e}") from None
    if isinstance(raw, dict) and raw.get("format") != FORMAT:
        raise StorageError(f"{directory} was saved in format {raw.get('format')!r}; this "
                           f"psframework reads format {FORMAT} (verified saves)")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'manifest'}: {err['msg']}"
                             for err in e.errors()[:5])
        raise StorageError(f"{path} is not a valid manifest: {problems}") from None
    seen = {(r.table, r.part) for r in manifest.files}
    if len(seen) != len(manifest.files):
        raise StorageError(f"{path} names one partition twice")
    for r in manifest.files:
        if r.file != partition_name(r.table, r.part, manifest.save_id):
            raise StorageError(f"{path} names {r.file!r}, which is not a file of save "
                               f"{manifest.save_id}")
    return manifest


def sweep(directory: str | Path, keep: str | None) -> list[str]:
    """Delete partition files of saves other than `keep` (None: of every save) and
    leftover temporary files; returns their names. Touches only files this module names."""
    directory = Path(directory)
    gone = []
    for path in directory.iterdir() if directory.is_dir() else ():
        temporary, ours = _TEMPORARY.match(path.name), _OURS.match(path.name)
        if (temporary and (temporary["name"] == MANIFEST or _OURS.match(temporary["name"]))
                or ours and ours["save"] != keep):
            path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone
