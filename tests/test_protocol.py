"""The sans-IO frames (encode / FrameDecoder), without a network. (The handshake:
test_handshake.py.)"""

from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from psframework.errors import ProtocolError
from psframework.protocol import (
    DTYPES, FrameDecoder, Kind, Limits, Message,
    OversizedFrame, encode,
)

PREFIX_BYTES = 16  # b"PSF1" | header length u32 LE | payload length u64 LE, per the frames docstring
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def prefix(hlen: int, plen: int, magic: bytes = b"PSF1") -> bytes:
    return magic + hlen.to_bytes(4, "little") + plen.to_bytes(8, "little")


def raw_frame(header, payload: bytes = b"", plen: int | None = None) -> bytes:
    """A frame built by hand from the documented layout, independent of encode()."""
    h = header if isinstance(header, bytes) else msgpack.packb(header, use_bin_type=True)
    return prefix(len(h), len(payload) if plen is None else plen) + h + payload


def wire(msg: Message, limits: Limits | None = None) -> bytes:
    return b"".join(bytes(b) for b in encode(msg, limits))


def feed(dec: FrameDecoder, data: bytes, how: str, cuts=()) -> None:
    """Feed `data` whole, byte by byte, in chunks cut at `cuts`, or through get_buffer()
    and buffer_updated() (the asyncio.BufferedProtocol path) in sizes drawn from `cuts`."""
    if how == "whole":
        dec.receive_data(data)
    elif how == "bytewise":
        for i in range(len(data)):
            dec.receive_data(data[i:i + 1])
    elif how == "chunks":
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        for a, b in zip(points, points[1:]):
            dec.receive_data(memoryview(data)[a:b])
    else:
        sizes = [c % 97 + 1 for c in cuts] or [1 << 30]
        pos = i = 0
        while pos < len(data):
            buf = dec.get_buffer()
            assert buf.nbytes > 0 and not buf.readonly
            n = min(buf.nbytes, sizes[i % len(sizes)], len(data) - pos)
            buf[:n] = data[pos:pos + n]
            dec.buffer_updated(n)
            pos, i = pos + n, i + 1


FEEDS = ["whole", "chunks", "bytewise", "buffered"]


def events(dec: FrameDecoder) -> list:
    out = []
    while (ev := dec.next_event()) is not None:
        out.append(ev)
    return out


def decode_all(data: bytes, limits: Limits | None = None) -> list:
    dec = FrameDecoder(limits)
    dec.receive_data(data)
    return events(dec)


def root(a: np.ndarray):
    """The object that owns an array's memory (through numpy bases and memoryviews)."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


def assert_same(msg: Message, got: Message) -> None:
    assert isinstance(got, Message)
    assert (got.kind, got.rid, got.op, got.model, got.args) == (
        msg.kind, msg.rid, msg.op, msg.model, msg.args)
    assert len(got.arrays) == len(msg.arrays)
    for want, have in zip(msg.arrays, got.arrays):
        assert have.dtype == want.dtype and have.shape == want.shape
        assert have.tobytes() == want.tobytes()  # bit for bit, NaNs included
        assert not have.flags.owndata and have.base is not None  # a view, not a copy
        if have.nbytes:
            assert have.ctypes.data % 8 == 0
    roots = {id(root(a)) for a in got.arrays}
    assert len(roots) <= 1  # every array is a view of the same payload buffer
    if got.arrays:  # ... the one uint8 buffer the decoder received the payload into
        payload = root(got.arrays[0])
        assert payload.dtype == np.uint8 and payload.ndim == 1 and payload.flags.owndata


LAYOUTS = [lambda a: a, np.asfortranarray, lambda a: a.T,  # C, Fortran, transposed, strided
           lambda a: np.repeat(a, 2, axis=0)[::2] if a.ndim else a]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(sorted(DTYPES))))
    a = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
    return draw(st.sampled_from(LAYOUTS))(a)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=8))
messages = st.builds(
    Message,
    kind=st.sampled_from(list(Kind)),
    rid=st.integers(0, 2**64 - 1),
    op=st.text(max_size=12),
    model=st.text(max_size=12),
    args=st.dictionaries(st.text(max_size=6), st.one_of(scalars, st.lists(scalars, max_size=3)),
                         max_size=4),
    arrays=st.lists(arrays(), max_size=4).map(tuple),
)


# -- round trips ----------------------------------------------------------------------

@FEW
@given(msg=messages, how=st.sampled_from(FEEDS), cuts=st.lists(st.integers(0, 10**6)),
       staging=st.sampled_from([16, 64, 256 * 1024]))
def test_round_trip(msg, how, cuts, staging):
    dec = FrameDecoder(staging_bytes=staging)
    feed(dec, wire(msg), how, cuts)
    (got,) = events(dec)
    assert_same(msg, got)
    assert dec.idle


@FEW
@given(msgs=st.lists(messages, min_size=2, max_size=4), how=st.sampled_from(FEEDS),
       cuts=st.lists(st.integers(0, 10**6)), staging=st.sampled_from([16, 100, 256 * 1024]))
def test_frames_back_to_back(msgs, how, cuts, staging):
    dec = FrameDecoder(staging_bytes=staging)
    feed(dec, b"".join(wire(m) for m in msgs), how, cuts)
    got = events(dec)
    assert len(got) == len(msgs)
    for m, g in zip(msgs, got):
        assert_same(m, g)
    assert dec.idle


@FEW
@given(msg=messages, data=st.data())
def test_truncated_frame_gives_no_event(msg, data):
    raw = wire(msg)
    cut = data.draw(st.integers(1, len(raw) - 1))
    dec = FrameDecoder(staging_bytes=data.draw(st.sampled_from([16, 256 * 1024])))
    feed(dec, raw[:cut], "chunks", data.draw(st.lists(st.integers(0, 10**6), max_size=5)))
    assert dec.next_event() is None
    assert not dec.idle
    dec.receive_data(raw[cut:])  # the rest completes it
    assert_same(msg, dec.next_event())
    assert dec.idle


def test_zero_d_empty_and_non_contiguous_arrays_keep_shape_and_values():
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    sent = (np.array(2.5), np.zeros((0, 3), np.int32), np.array(True), base[:, ::3], base.T,
            base[::-2, 1:4], np.asfortranarray(base))
    (got,) = decode_all(wire(Message(Kind.REPLY, 7, arrays=sent)))
    for want, have in zip(sent, got.arrays, strict=True):
        assert have.shape == want.shape and have.dtype == want.dtype
        np.testing.assert_array_equal(have, want)


def test_encode_references_contiguous_arrays_without_copying():
    a = np.zeros(1000, dtype=np.float64)
    bufs = encode(Message(Kind.REQUEST, arrays=(a,)))
    a[10] = 42.0  # written after encode: the frame must carry it
    (got,) = decode_all(b"".join(bytes(b) for b in bufs))
    assert got.arrays[0][10] == 42.0


def test_a_payload_is_read_into_the_buffer_the_receiver_offers_for_it():
    """FrameDecoder.into: a reply of the size a caller waits for lands in the caller's
    array (the array given back is a view of it); other frames get buffers of their own."""
    want = np.arange(64, dtype=np.float64).reshape(8, 8)
    frames = b"".join(bytes(b) for m in (Message(Kind.REPLY, 5, arrays=(want,)),
                                         Message(Kind.REPLY, 6, arrays=(want[:3],)))
                      for b in encode(m))
    dest = np.zeros((8, 8))
    asked = []

    def into(kind, rid, nbytes):
        asked.append((kind, rid, nbytes))
        return dest.reshape(-1).view(np.uint8) if rid == 5 and nbytes == dest.nbytes else None
    decoder = FrameDecoder(staging_bytes=64, max_staging_bytes=64)
    decoder.into = into
    for at in range(0, len(frames), 7):  # a stream read a few bytes at a time
        decoder.receive_data(frames[at:at + 7])
    first, second = decoder.next_event(), decoder.next_event()
    assert asked == [(Kind.REPLY, 5, 512), (Kind.REPLY, 6, 192)]
    np.testing.assert_array_equal(dest, want)
    assert np.shares_memory(first.arrays[0], dest)
    np.testing.assert_array_equal(second.arrays[0], want[:3])
    assert not np.shares_memory(second.arrays[0], dest)


# -- refusals by encode -----------------------------------------------------------------

@pytest.mark.parametrize("a", [np.zeros(2, np.complex128), np.array([None], object),
                               np.zeros(2, ">f8"), np.zeros(2, np.float16),
                               np.zeros((1,) * 9)])
def test_encode_refuses_arrays_the_decoder_would_reject(a):
    with pytest.raises(ProtocolError):
        encode(Message(Kind.REQUEST, arrays=(a,)))


def test_encode_frame_limit_is_exact():
    msg = Message(Kind.REQUEST, 3, "push", "m", {"k": 1}, (np.ones(100, np.float64),))
    size = len(wire(msg))
    assert wire(msg, Limits(max_frame_bytes=size, max_header_bytes=256)) == wire(msg)
    with pytest.raises(ProtocolError, match="max_frame_bytes"):
        encode(msg, Limits(max_frame_bytes=size - 1, max_header_bytes=256))
    # the decoder draws the same line
    assert isinstance(decode_all(wire(msg), Limits(size, 256))[0], Message)
    assert isinstance(decode_all(wire(msg), Limits(size - 1, 256))[0], OversizedFrame)
    with pytest.raises(ProtocolError, match="max_header_bytes"):
        encode(Message(Kind.REQUEST, args={"blob": "x" * 300}), Limits(10**6, 256))


# -- garbage --------------------------------------------------------------------------

GOOD = [3, 1, "op", "m", {}, []]
GARBAGE = {
    "bad magic": prefix(2, 0, magic=b"HTTP") + b"\x90\x90",
    "header not msgpack": prefix(3, 0) + b"\xc1\xc1\xc1",
    "header with trailing bytes": raw_frame(msgpack.packb(GOOD) + b"\x00"),
    "empty header": prefix(0, 0),
    "header is a map": raw_frame({"kind": 3}),
    "header too short": raw_frame(GOOD[:5]),
    "header too long": raw_frame(GOOD + [0]),
    "unknown kind": raw_frame([99, 1, "op", "m", {}, []]),
    "kind not int": raw_frame(["REQUEST", 1, "op", "m", {}, []]),
    "negative rid": raw_frame([3, -1, "op", "m", {}, []]),
    "rid not int": raw_frame([3, 1.5, "op", "m", {}, []]),
    "op not str": raw_frame([3, 1, b"op", "m", {}, []]),
    "args not map": raw_frame([3, 1, "op", "m", [], []]),
    "descriptors not list": raw_frame([3, 1, "op", "m", {}, {}]),
    "complex dtype": raw_frame([3, 1, "", "", {}, [["<c16", [1]]]], bytes(16)),
    "object dtype": raw_frame([3, 1, "", "", {}, [["|O", [1]]]], bytes(8)),
    "big-endian dtype": raw_frame([3, 1, "", "", {}, [[">f8", [1]]]], bytes(8)),
    "unhashable dtype": raw_frame([3, 1, "", "", {}, [[["<f8"], [1]]]], bytes(8)),
    "negative dim": raw_frame([3, 1, "", "", {}, [["<f8", [-1]]]]),
    "bool dim": raw_frame([3, 1, "", "", {}, [["<f8", [True]]]], bytes(8)),
    "too many dims": raw_frame([3, 1, "", "", {}, [["|u1", [1] * 9]]], bytes(8)),
    "descriptor arity": raw_frame([3, 1, "", "", {}, [["<f8"]]], bytes(8)),
    "empty but impossibly large": raw_frame([3, 1, "", "", {}, [["<f8", [0, 2**63]]]]),
    "empty but too large": raw_frame([3, 1, "", "", {}, [["|u1", [2**31, 2**31, 2**31, 0]]]]),
    "op not utf-8": raw_frame(msgpack.packb([3, 1, b"\xff", "", {}, []], use_bin_type=False)),
    "payload too short for descriptors": raw_frame([3, 1, "", "", {}, [["<f8", [3]]]],
                                                   bytes(16)),
    "payload longer than descriptors": raw_frame([3, 1, "", "", {}, [["<f4", [1]]]],
                                                 bytes(16)),
    "unpadded payload": raw_frame([3, 1, "", "", {}, [["|u1", [3]]]], bytes(3)),
}


@pytest.mark.parametrize("how", ["whole", "bytewise", "buffered"])
@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_a_protocol_error_and_breaks_the_decoder(name, how):
    ok = wire(Message(Kind.REQUEST, 1, "op"))
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        feed(dec, ok + GARBAGE[name] + ok, how)
    assert_same(Message(Kind.REQUEST, 1, "op"), dec.next_event())  # the frame before it
    assert dec.next_event() is None
    with pytest.raises(ProtocolError):
        dec.receive_data(ok)
    with pytest.raises(ProtocolError):
        dec.get_buffer()
    assert dec.next_event() is None


def test_header_over_limit_fails_on_the_prefix_alone():
    limits = Limits(max_frame_bytes=10**6, max_header_bytes=256)
    dec = FrameDecoder(limits)
    dec.receive_data(prefix(257, 0)[:15])  # no header byte is ever sent
    with pytest.raises(ProtocolError, match="max_header_bytes"):
        dec.receive_data(prefix(257, 0)[15:])
    with pytest.raises(ProtocolError):  # a 4 GiB header is refused before it is buffered
        FrameDecoder(limits).receive_data(prefix(2**32 - 1, 0))
    op = next("x" * n for n in range(256)
              if len(msgpack.packb([3, 1, "x" * n, "", {}, []])) == 256)
    (got,) = decode_all(raw_frame([3, 1, op, "", {}, []]), limits)  # exactly at the limit
    assert got.op == op


# -- oversized frames -----------------------------------------------------------------

LIMITS = Limits(max_frame_bytes=4096, max_header_bytes=256)


@pytest.mark.parametrize("how", FEEDS)
def test_oversized_frame_is_reported_skipped_and_the_stream_continues(how):
    big = Message(Kind.REQUEST, 41, "push_rows", "emb", {"x": 1}, (np.ones(1000, np.float64),))
    small = Message(Kind.REQUEST, 42, "pull_rows", "emb", {}, (np.arange(5),))
    raw = wire(big)
    dec = FrameDecoder(LIMITS, staging_bytes=64)
    feed(dec, raw + wire(small) + raw + wire(small), how, list(range(0, 20000, 37)))
    got = events(dec)
    assert len(got) == 4
    for over in got[0], got[2]:
        assert over == OversizedFrame(Kind.REQUEST, 41, "push_rows", "emb", len(raw), 4096)
    assert_same(small, got[1])
    assert_same(small, got[3])
    assert dec.idle


def test_oversized_payload_is_never_allocated():
    # A sound header announcing a 1 TiB payload: reported at once, skipped as it streams.
    plen = 2**40
    header = [3, 9, "op", "m", {}, [["|u1", [plen]]]]
    size = PREFIX_BYTES + len(msgpack.packb(header)) + plen
    chunk = memoryview(bytes(64 * 1024))
    tracemalloc.start()
    try:
        dec = FrameDecoder(LIMITS)
        dec.receive_data(raw_frame(header, plen=plen))
        assert dec.next_event() == OversizedFrame(Kind.REQUEST, 9, "op", "m", size, 4096)
        for _ in range(256):  # 16 MiB of the payload through the decoder
            dec.receive_data(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024  # the staging buffer grows to 256 KiB at most
    assert dec.next_event() is None and not dec.idle
