"""Frames: the wire format, as a sans-IO encoder and decoder.

A frame is

    prefix   16 bytes  b"PSF1" | header length (u32 LE) | payload length (u64 LE)
    header   msgpack   [kind, request id, op, model, args, [[dtype, shape], ...]]
    payload  raw       the array buffers in header order, each padded to 8 bytes

Invariants this module keeps:

- No I/O and no event loop. Bytes go in through `receive_data` (or, without a copy,
  `get_buffer` + `buffer_updated`, the shape of asyncio.BufferedProtocol); messages come
  out of `next_event`. `encode` turns a message into a list of buffers to write.
- Large arrays never pass through msgpack. On send, the array's own memory is one of the
  returned buffers (whether it is copied on the way is the transport's choice: see
  transport.peer). On receive, each frame's payload ends up in one buffer of its own — a
  new one, or one the receiver offers for that frame (`FrameDecoder.into`: a reply read
  straight into the caller's array) — and the arrays are views of it (`np.frombuffer`).
  Bytes go first into a small staging buffer (prefixes, headers); what of a payload
  arrived there with its header — all of a small frame, the first bytes of a big one — is
  copied out once, and the rest of a big payload is read straight into its buffer, so a
  bulk transfer costs no copy beyond the kernel's.
- Limits are checked from the prefix and header, before the payload is allocated. A frame
  whose payload is too large but whose header is sound is skipped and reported as an
  `OversizedFrame` event, so the peer can be told which request failed and the stream
  stays usable. Anything else malformed raises ProtocolError, and the decoder refuses
  all further input: a stream that lost its framing cannot be trusted again.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import msgpack
import numpy as np

from psframework.errors import ProtocolError

__all__ = ["Kind", "Message", "OversizedFrame", "Limits", "FrameDecoder", "encode", "DTYPES"]

MAGIC = b"PSF1"
PREFIX = struct.Struct("<4sIQ")
ALIGN = 8
MAX_NDIM = 8
_MAX_ARRAY_BYTES = np.iinfo(np.intp).max  # numpy's own bound, zero-length axes aside
#: dtypes that may cross the wire; anything else is refused before allocation.
DTYPES = frozenset(np.dtype(t).str for t in (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64",
))
_DTYPE = {t: np.dtype(t) for t in DTYPES}  # a descriptor's dtype string -> the dtype


class Kind(enum.IntEnum):
    HELLO = 0
    AUTH = 1
    WELCOME = 2
    REQUEST = 3
    REPLY = 4
    ERROR = 5


_KINDS = {int(k): k for k in Kind}  # faster than Kind(n), and None for unknown kinds


@dataclass(frozen=True, slots=True)
class Message:
    """One frame's content. `args` holds small msgpack values; `arrays` the big data."""

    kind: Kind
    rid: int = 0
    op: str = ""
    model: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    arrays: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame whose payload exceeded the limit; its bytes were skipped, not stored."""

    kind: Kind
    rid: int
    op: str
    model: str
    size: int
    limit: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes a peer accepts. The frame limit counts prefix, header and payload."""

    max_frame_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_header_bytes < 256 or self.max_frame_bytes < self.max_header_bytes:
            raise ValueError("need 256 <= max_header_bytes <= max_frame_bytes")


def _pad(n: int) -> int:
    return -n % ALIGN


_ZEROS = bytes(ALIGN)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.size <= 64:
        return obj.tolist()
    raise TypeError(f"cannot put {type(obj).__name__} in a message header; send arrays as arrays")


def encode(msg: Message, limits: Limits | None = None) -> list[bytes | memoryview]:
    """Buffers to write, in order. The arrays' memory is referenced, not copied
    (a non-contiguous array is made contiguous first). Raises ProtocolError when the
    frame would exceed `limits`, so an oversized message is never half-sent."""
    descriptors = []
    views: list[memoryview] = []
    payload = 0
    for a in msg.arrays:
        a = np.asarray(a, order="C")  # unlike ascontiguousarray, keeps 0-d arrays 0-d
        dt = a.dtype.str
        if dt not in DTYPES:
            raise ProtocolError(f"dtype {a.dtype} cannot be sent; use one of {sorted(DTYPES)}",
                                model=msg.model or None, op=msg.op or None)
        if a.ndim > MAX_NDIM:
            raise ProtocolError(f"a {a.ndim}-d array cannot be sent; at most {MAX_NDIM} "
                                "dimensions, reshape it first",
                                model=msg.model or None, op=msg.op or None)
        descriptors.append([dt, list(a.shape)])
        views.append(a.data.cast("B") if a.nbytes else memoryview(b""))
        payload += a.nbytes + _pad(a.nbytes)
    header = msgpack.packb([int(msg.kind), msg.rid, msg.op, msg.model, msg.args, descriptors],
                           use_bin_type=True, default=_to_plain)
    if limits is not None:
        size = PREFIX.size + len(header) + payload
        if len(header) > limits.max_header_bytes:
            raise ProtocolError(
                f"message header of {len(header)} bytes exceeds max_header_bytes="
                f"{limits.max_header_bytes}; pass large data as arrays, not in args",
                model=msg.model or None, op=msg.op or None)
        if size > limits.max_frame_bytes:
            raise ProtocolError(
                f"frame of {size} bytes exceeds max_frame_bytes={limits.max_frame_bytes}; "
                "send smaller batches or raise PSF_MAX_FRAME_BYTES on every server and client",
                model=msg.model or None, op=msg.op or None)
    out: list[bytes | memoryview] = [PREFIX.pack(MAGIC, len(header), payload) + header]
    for v in views:
        if v.nbytes:
            out.append(v)
        if _pad(v.nbytes):
            out.append(_ZEROS[: _pad(v.nbytes)])
    return out


#: a parsed header: kind, request id, op, model, args, and the arrays as (dtype, shape, bytes)
_Header = tuple[Kind, int, str, str, dict, list[tuple[np.dtype, tuple, int]]]


def _parse_header(raw: memoryview) -> tuple[Kind, int, str, str, dict,
                                            list[tuple[np.dtype, tuple, int]], int]:
    """The header's fields, checked; the arrays as (dtype, shape, bytes) and the payload
    length they need (each array padded to ALIGN)."""
    try:
        h = msgpack.unpackb(raw, raw=False, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"frame header is not valid msgpack ({type(e).__name__})") from None
    if type(h) is not list or len(h) != 6:
        raise ProtocolError("frame header must be a 6-element array")
    kind, rid, op, model, args, descs = h
    kind = _KINDS.get(kind) if type(kind) is int else None
    if kind is None:
        raise ProtocolError(f"unknown message kind {h[0]!r}")
    if type(rid) is not int or rid < 0:
        raise ProtocolError("request id must be a non-negative integer")
    if type(op) is not str or type(model) is not str or type(args) is not dict:
        raise ProtocolError("op and model must be strings and args a map")
    if type(descs) is not list:
        raise ProtocolError("array descriptors must be a list")
    arrays = []
    payload = 0
    for d in descs:
        dt = _DTYPE.get(d[0]) if type(d) is list and len(d) == 2 and type(d[0]) is str else None
        shape = d[1] if dt is not None else None
        if (dt is None or type(shape) is not list or len(shape) > MAX_NDIM
                or not all(type(n) is int and n >= 0 for n in shape)):
            raise ProtocolError(f"bad array descriptor {d!r}")
        if _prod([max(n, 1) for n in shape]) * dt.itemsize > _MAX_ARRAY_BYTES:
            raise ProtocolError(f"array descriptor {d!r} is larger than any array can be")
        nbytes = _prod(shape) * dt.itemsize
        arrays.append((dt, tuple(shape), nbytes))
        payload += nbytes + _pad(nbytes)
    return kind, rid, op, model, args, arrays, payload


class FrameDecoder:
    """Incremental decoder; see the module docstring for the contract."""

    def __init__(self, limits: Limits | None = None, staging_bytes: int = 4096,
                 max_staging_bytes: int = 256 * 1024) -> None:
        self.limits = limits or Limits()  # may be changed between frames (after a handshake)
        # The staging buffer (prefixes, headers, small frames) starts small, so an idle
        # connection holds little, and doubles whenever a read fills it, up to the max.
        self._buf = bytearray(max(staging_bytes, PREFIX.size))
        self._max_staging = max(max_staging_bytes, len(self._buf))
        self._offered = 0
        self._start = 0
        self._end = 0
        self._events: deque = deque()
        self._payload: np.ndarray | None = None  # uint8, filled in place
        self._fill = 0
        self._pending: _Header | None = None  # the header of the payload being filled
        self._discard = 0
        self._broken: ProtocolError | None = None
        #: into(kind, rid, payload bytes) -> a writable uint8 array of exactly that many
        #: bytes to read the payload into (the arrays are then views of it), or None
        self.into: Callable[[Kind, int, int], np.ndarray | None] | None = None

    # -- input -----------------------------------------------------------------------
    def get_buffer(self) -> memoryview:
        """A writable buffer for the next bytes (never empty)."""
        self._check()
        if self._payload is not None:
            return self._payload.data[self._fill:]
        if self._end == len(self._buf):
            self._compact()
        self._offered = len(self._buf) - self._end
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written at the start of the last `get_buffer()`."""
        if self._payload is not None:
            self._fill += nbytes
            if self._fill == len(self._payload):
                self._finish_payload()
            return
        self._end += nbytes
        self._process()
        if nbytes == self._offered and len(self._buf) < self._max_staging:
            self._grow(min(2 * len(self._buf), self._max_staging))  # a busy stream

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes (copies them; `get_buffer` avoids that)."""
        mv = memoryview(data).cast("B")
        while mv.nbytes:
            dst = self.get_buffer()
            n = min(dst.nbytes, mv.nbytes)
            dst[:n] = mv[:n]
            mv = mv[n:]
            self.buffer_updated(n)

    def next_event(self) -> Message | OversizedFrame | None:
        return self._events.popleft() if self._events else None

    @property
    def idle(self) -> bool:
        """No partial frame is buffered (a clean place for the stream to end)."""
        return self._payload is None and self._start == self._end and not self._discard

    # -- internals -------------------------------------------------------------------
    def _check(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _fail(self, err: ProtocolError) -> None:
        self._broken = err
        raise err

    def _compact(self) -> None:
        pending = self._end - self._start
        if self._start:
            self._buf[:pending] = self._buf[self._start:self._end]
            self._start, self._end = 0, pending
        if self._end == len(self._buf):  # one header bigger than the staging buffer
            self._grow(2 * len(self._buf))

    def _process(self) -> None:
        while True:
            avail = self._end - self._start
            if self._discard:
                n = min(self._discard, avail)
                self._start += n
                self._discard -= n
                if self._discard:
                    break
                continue
            if avail < PREFIX.size:
                break
            magic, hlen, plen = PREFIX.unpack_from(self._buf, self._start)
            if magic != MAGIC:
                self._fail(ProtocolError(f"not a psframework frame (got {bytes(magic)!r}); " + (
                    "this looks like TLS (a record header): give both ends the same TLS "
                    "settings (tls_cert / tls_key on servers, tls_ca on clients)"
                    if magic[:1] in (b"\x15", b"\x16") and magic[1:2] == b"\x03" else
                    "is another program talking to this port, or a different protocol "
                    "version?")))
            if hlen > self.limits.max_header_bytes:
                self._fail(ProtocolError(
                    f"frame header of {hlen} bytes exceeds max_header_bytes="
                    f"{self.limits.max_header_bytes}"))
            if avail < PREFIX.size + hlen:
                if self._start + PREFIX.size + hlen > len(self._buf):
                    self._compact_for(PREFIX.size + hlen)
                break
            hstart = self._start + PREFIX.size
            try:
                kind, rid, op, model, args, descs, expected = _parse_header(
                    memoryview(self._buf)[hstart:hstart + hlen])
            except ProtocolError as e:
                self._fail(e)
            if expected != plen:
                self._fail(ProtocolError(
                    f"payload length {plen} does not match its array descriptors ({expected})"))
            self._start = hstart + hlen
            size = PREFIX.size + hlen + plen
            if size > self.limits.max_frame_bytes:
                self._events.append(OversizedFrame(kind, rid, op, model, size,
                                                   self.limits.max_frame_bytes))
                self._discard = plen
                continue
            header = (kind, rid, op, model, args, descs)
            if plen <= avail - PREFIX.size - hlen:  # all here (a small frame): one copy
                begin, self._start = self._start, self._start + plen
                self._emit(header, np.array(memoryview(self._buf)[begin:self._start]))  # uint8
                continue
            self._pending = header
            # the receiver's own buffer for it, if it has one of this size; else np.empty,
            # not bytearray: no zero-fill, and numpy asks for huge pages, so a big payload
            # is not paid for in page faults (it is only read once complete)
            into = self.into(kind, rid, plen) if self.into is not None else None
            payload = into if into is not None else np.empty(plen, dtype=np.uint8)
            self._payload = payload
            n = min(avail - PREFIX.size - hlen, plen)
            payload.data[:n] = self._buf[self._start:self._start + n]
            self._start += n
            self._fill = n
            if n == plen:
                self._finish_payload()
                continue
            self._start = self._end = 0  # staging is empty while the payload fills
            break

    def _compact_for(self, need: int) -> None:
        self._compact()
        if len(self._buf) < need:
            self._grow(need)

    def _grow(self, size: int) -> None:
        # A new buffer rather than extend(): a transport may still hold a view of the old.
        new = bytearray(size)
        new[: self._end - self._start] = self._buf[self._start:self._end]
        self._buf, self._end, self._start = new, self._end - self._start, 0

    def _finish_payload(self) -> None:
        header, payload = self._pending, self._payload
        assert header is not None and payload is not None  # a payload was being filled
        self._pending, self._payload, self._fill = None, None, 0
        self._emit(header, payload)

    def _emit(self, header: _Header, payload: np.ndarray) -> None:
        kind, rid, op, model, args, descs = header
        arrays = []
        offset = 0
        for dt, shape, nbytes in descs:
            arrays.append(np.frombuffer(payload, dtype=dt, count=nbytes // dt.itemsize,
                                        offset=offset).reshape(shape))
            offset += nbytes + _pad(nbytes)
        self._events.append(Message(kind, rid, op, model, args, tuple(arrays)))


def _prod(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
