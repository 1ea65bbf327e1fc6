"""Where the time of one small request goes: each stage of a one-row pull (and push) timed
alone with psframework's own functions, beside the same requests end to end and the floors
of a request/reply between two processes on this machine.

Run (JSON on stdout, progress on stderr; about 25 s on 2 cores, under 10 s with --quick):

    python benchmarks/request_path.py [--quick] [--shards 2] [--reps 7] > request_path.json
    PYTHONPATH=/tmp/before python benchmarks/request_path.py   # an older psframework checkout

The request: `pull_rows` of one row (row 1234) of a 10000 x 64 float32 matrix split by rows
into 2 partitions (the row is in partition 0), and `push_rows` of a row of ones into it.

stages: µs per call, each the median over --reps repetitions (default 7, 3 with --quick) of
a loop of up to 20,000 calls (2,000 with --quick), fewer for a slow stage so that one
repetition takes about 0.2 s (0.03 s). Timed with time.perf_counter_ns around the loop;
the loop's own cost per call (an empty call, `config.loop_overhead_us`) is not subtracted.

- client.indices: psframework.client.checks.indices([1234], 10000, "rows").
- client.split: spec.split().split(rows) (TableSpec.split, Partitioner.split): which
  partition, which local index.
- client.chunks: plan.chunks(1, 8 + row bytes, limit) and the piece cut with it
  (local[c], plan.at(pos, c)), as AsyncClient._row_plan does for each partition.
- client.values: checks.values of the push's (1, 64) float32 values (push only).
- encode.request / encode.reply: psframework.protocol.encode(Message(...), limits) of the
  pull request (args table, part, uid; the local row as a 1-element int64 array) and of
  its reply (one (1, 64) float32 array); encode.push_request: the push (args with an
  exactly-once tag; a row index and a (1, 64) float32 array). The Message is built inside
  the timed call, the Limits() once.
- msgpack.packb_header / msgpack.unpackb_header: msgpack alone on the pull request's
  header list [kind, rid, op, model, args, descriptors] (encode's and the decoder's share).
- decode.request / decode.reply / decode.push_request: FrameDecoder.receive_data(the
  frame's bytes) + next_event(); one decoder, reused as a connection reuses it.
- shard.pull_rows / shard.push_rows: a real storage Partition (Partition.create from the
  TableSpec, placed in 2 partitions, the "add" aggregator): pull_rows / push_rows of one
  local row, with the arrays as the decoder gives them.
- shard.once_read: the exactly-once window (transport.once.OnceLog(dedup_window,
  dedup_bytes, reads=the shard's READS).wrap(dispatch), as the shard builds it) passing
  an untagged pull to a dispatch that returns at once.
- shard.once_tagged: the window handling one tagged request (args.once = [stream, seq,
  floor], floor = seq as a client with one request in flight sends it, a new seq per
  call) whose dispatch returns ({}, ()) at once: the window's own bookkeeping.
- shard.once_push: the same with the real push (Partition.push_rows) as the dispatch.
- shard.handle_pull / shard.handle_push: the shard's whole dispatch of the decoded
  request — a real shard.server.Shard (not started, no master) hosting the table in a
  HostedModel: Shard.handle(message) (ops count, exactly-once window, op lookup, model
  and partition lookup, write gate, the partition op); handle_push with a new tag per
  call. Built from internals; skipped (see `skipped`) where they differ.
- asyncio.future: on a uvloop loop (psframework.transport.loop), inside one coroutine:
  loop.create_future(), set_result, await it (done already: no loop step).
- asyncio.await_layer: one `await f()` of a coroutine that returns at once.
- asyncio.call_soon: a future resolved by loop.call_soon(fut.set_result, None), awaited:
  one trip through the loop (a loop step with its poll for I/O, then the task's wake-up).
- sync.run_coroutine_threadsafe: what the synchronous Client does per call (client/sync.py
  Client.run): asyncio.run_coroutine_threadsafe(a trivial coroutine, a uvloop loop running
  in another thread).result(). sync.client_run: the same through a real
  psframework.Client's run() (its own loop thread; it never connects anywhere).
- syscall.socketpair_300: socket.socketpair(), send 300 bytes on one end and recv them on
  the other, in this thread: one write and one read system call (Unix socket).
- syscall.tcp_300: the same on a connected TCP pair on 127.0.0.1 (TCP_NODELAY), the kind
  of socket requests travel on.

accounted_us: the sum of the stages one async pull passes through on the client and the
shard, each once (`accounted_stages` lists them with their multipliers):
client.indices + client.split + client.chunks + encode.request + decode.request +
shard.handle_pull (without it: shard.once_read + shard.pull_rows) + encode.reply +
decode.reply + asyncio.future (the reply's future) + 2 x syscall.tcp_300 (the request's
and the reply's write and read). A stage that could not be timed is left out and named in
`accounted_missing`.

unaccounted_us = end_to_end.async_pull_us.p50 - accounted_us: what no stage measures —
the client's await layers (several per pull: pull_rows, _row_plan, _scatter, request,
_retrying, attempt, ClientConnection.request ...; asyncio.await_layer each), the rest of
its bookkeeping (model lookup, jobs, exactly-once tags, the window, the reply's timer),
the transport's callbacks (buffer_updated, on_event, send), loop steps on both ends,
waking the other process and being woken, and the kernel's TCP beyond one write and read.

in_process (µs per call, timed as the stages are): a real AsyncClient's pull_rows /
push_rows whose connection is a real ClientConnection, handshake done, wired to a real
ServerConnection of the Shard above through an in-memory transport that hands the bytes
over in the next loop step (as a socket read would come; no system call, no other
process): the library's whole CPU cost on both ends, with its loop steps (plus the
hand-over itself: a copy and a call_soon per write, about asyncio.call_soon each way).
`e2e_minus_in_process_pull_us` = end_to_end async pull p50 - in_process.pull_us: what
sockets, wake-ups and scheduling between two processes add. Built from internals
(AsyncClient._conns and ._models); skipped, with the reason, where they differ.

end_to_end (µs, p50 and p99 over N sequential requests after 100 warm-up rounds; N = 2000,
300 with --quick), on a LocalCluster of --shards shards, rows drawn at random:
`async_pull_us` / `async_push_us`: one-row pull_rows / push_rows from an AsyncClient, as
pullpush.py's small_pull; `sync_pull_us`: the same pull from the synchronous
cluster.client(); `sync_minus_async_pull_us`: the difference of their p50s (compare
sync.client_run).

floors (µs, p50 and p99; one of each per round of the async requests above — a round is
a raw request, an echo, a pull and a push, each in turn first — so that noise hits all
alike): `raw_socket_rtt_us`: a blocking TCP socket to a child process
(pullpush.RawSocket): 8 bytes out, 256 back; `uvloop_echo_rtt_us`: an asyncio Protocol
echo server on uvloop in a child process, and an asyncio Protocol client on uvloop here
that sends 256 bytes and awaits a future resolved in data_received (common.UvloopEcho).

skipped: each stage (or fixture) that could not run against this psframework, with the
error. config.psframework_file says which checkout was measured.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import statistics
import sys
import threading
import time
from typing import Any, Callable

import msgpack
import numpy as np

from common import UvloopEcho, arguments, log, machine
from pullpush import RawSocket, percentiles, rounds_on_loop

import psframework
from psframework import LocalCluster, init
from psframework.protocol import FrameDecoder, Kind, Limits, Message, encode
from psframework.storage import TableSpec
from psframework.transport.loop import new_event_loop, run

ROWS, COLS, PARTS = 10_000, 64, 2
ROW = 1234  # in partition 0 of 2, so its local index is ROW too
RID = 4321
MODEL = "small"
UID = "5c0f3e8a9b7d4c21a6e04f1d2b8c7a90"  # a model incarnation, as the master makes them
ADDRESS = "127.0.0.1:9"  # the in-process shard's name in the client's tables; never dialled


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


# -- the clock --------------------------------------------------------------------------------
def per_call_us(body: Callable[[int, Any], Any], loops: int, reps: int, budget_s: float,
                setup: Callable[[int], Any] | None = None) -> float:
    """Median over `reps` of the µs per call of body(n, setup(n)) (n calls; setup untimed):
    n = `loops`, or fewer when a repetition would take over `budget_s`."""
    body(1, setup(1) if setup else None)  # first-call costs (imports, kernels) untimed
    warm = min(loops, 200)
    arg = setup(warm) if setup else None
    t = time.perf_counter_ns()
    body(warm, arg)
    each_ns = max((time.perf_counter_ns() - t) / warm, 1.0)
    n = max(min(loops, 100), min(loops, int(budget_s * 1e9 / each_ns)))
    samples = []
    for _ in range(reps):
        arg = setup(n) if setup else None
        t = time.perf_counter_ns()
        body(n, arg)
        samples.append((time.perf_counter_ns() - t) / n / 1e3)
    return round(statistics.median(samples), 3)


def calls(fn: Callable[[], Any]) -> Callable[[int, Any], None]:
    """A body of n calls of fn()."""
    def body(n: int, _: Any) -> None:
        for _ in range(n):
            fn()
    return body


def each(fn: Callable[[Any], Any]) -> Callable[[int, Any], None]:
    """A body calling fn(x) for each x its setup prepared."""
    def body(n: int, items: list) -> None:
        for x in items:
            fn(x)
    return body


class Stages:
    """Times stages into `us`; a stage that fails (an older psframework) goes to `skipped`."""

    def __init__(self, loops: int, reps: int, budget_s: float) -> None:
        self.loops, self.reps, self.budget_s = loops, reps, budget_s
        self.us: dict[str, float] = {}
        self.skipped: dict[str, str] = {}

    def time(self, name: str, make: Callable[[], Any]) -> None:
        """make() returns a body(n, arg), or (body, setup)."""
        try:
            made = make()
            body, setup = made if isinstance(made, tuple) else (made, None)
            self.us[name] = per_call_us(body, self.loops, self.reps, self.budget_s, setup)
            log(f"{name}: {self.us[name]} us")
        except Exception as e:  # noqa: BLE001 - every stage is optional against old code
            self.skipped[name] = _why(e)
            log(f"{name}: skipped ({self.skipped[name]})")


# -- what the stages work on ------------------------------------------------------------------
class Fixtures:
    """The table, its partitions, the messages and frames of one pull and one push."""

    def __init__(self, skipped: dict[str, str]) -> None:
        self.skipped = skipped
        self.limits = Limits()
        self.spec = TableSpec("values", (ROWS, COLS), "float32", parts=PARTS,
                              init=init.normal(seed=2))
        self.ones = np.ones((1, COLS), np.float32)
        self.args = {"table": "values", "part": 0, "uid": UID}
        self.settings = self.build("settings", self._settings)
        self.rows = self.build("rows", self._rows)
        if self.rows is None:
            self.rows = np.array([ROW], np.int64)
        self.pull = Message(Kind.REQUEST, RID, "pull_rows", MODEL, dict(self.args), (self.rows,))
        self.pull_frame = frame(self.pull, self.limits)
        self.pull_in = decoded(self.pull_frame, self.limits)  # as the shard receives it
        self.push = Message(Kind.REQUEST, RID, "push_rows", MODEL,
                            {**self.args, "once": [os.urandom(8), 1, 1]}, (self.rows, self.ones))
        self.push_frame = frame(self.push, self.limits)
        self.push_in = decoded(self.push_frame, self.limits)
        self.combine = self.build("combine", self._combine)
        self.partition = self.build("partition", lambda: self.make_partition(0))
        row = (self.partition.pull_rows(self.pull_in.arrays[0]) if self.partition is not None
               else np.random.default_rng(0).random((1, COLS), np.float32))
        self.reply = Message(Kind.REPLY, RID, args={}, arrays=(row,))
        self.reply_frame = frame(self.reply, self.limits)
        self.shard = self.build("shard", self._shard)

    def build(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            self.skipped[f"fixture.{name}"] = _why(e)
            log(f"fixture {name}: {self.skipped[f'fixture.{name}']}")
            return None

    @staticmethod
    def _settings():
        from psframework.config import load_settings
        return load_settings()

    def _rows(self) -> np.ndarray:
        """The local rows the client sends: its own split and chunking of [ROW]."""
        ((part, pos, local),) = self.spec.split().split(_checks().indices([ROW], ROWS, "rows"))
        assert part == 0, part
        return local[0:1]  # the chunk of it (plan.chunks gives one slice: 0:1)

    @staticmethod
    def _combine():
        from psframework.storage import aggregate
        return aggregate.BUILTIN["add"]

    def make_partition(self, part: int):
        from psframework.storage.table import Partition
        return Partition.create(self.spec, part, self.combine)

    def tagged(self, stream: bytes, seqs) -> Callable[[int], list]:
        """setup(n): n push messages as decoded, each with the next seq of `stream`."""
        rows, values = self.push_in.arrays

        def setup(n: int) -> list:
            out = []
            for _ in range(n):
                seq = next(seqs)
                out.append(Message(Kind.REQUEST, RID, "push_rows", MODEL,
                                   {**self.args, "once": [stream, seq, seq]}, (rows, values)))
            return out
        return setup

    def _shard(self):
        """A real Shard, not started, hosting the table as the create op would leave it."""
        from psframework.model import model_type
        from psframework.shard.server import Shard
        try:
            from psframework.shard.hosted import HostedModel
        except ImportError:
            from psframework.shard.server import HostedModel  # older layouts
        shard = Shard(self.settings)
        plugin = model_type("tables")({"tables": [self.spec.to_wire()]})
        parts = {p: {"values": self.make_partition(p)} for p in range(PARTS)}
        shard.models[MODEL] = HostedModel(MODEL, UID, plugin, {"values": self.spec}, parts)
        reply = shard.handle(self.pull_in)
        if not np.array_equal(reply[1][0], parts[0]["values"].data[ROW:ROW + 1]):
            raise AssertionError("the shard's pull does not return the row")
        return shard


def frame(msg: Message, limits: Limits) -> bytes:
    return b"".join(bytes(b) for b in encode(msg, limits))


def decoded(data: bytes, limits: Limits) -> Message:
    dec = FrameDecoder(limits)
    dec.receive_data(data)
    return dec.next_event()


# -- the stages -------------------------------------------------------------------------------
def _checks():
    from psframework.client import checks
    return checks


def client_stages(st: Stages, fx: Fixtures) -> None:
    spec = fx.spec
    st.time("client.indices", lambda: calls(
        lambda indices=_checks().indices: indices([ROW], ROWS, "rows")))
    rows = np.array([ROW], np.int64)
    st.time("client.split", lambda: calls(lambda: spec.split().split(rows)))

    def chunks():
        try:
            from psframework.client import plan
            chunk, at, room = plan.chunks, plan.at, plan.HEADER_ROOM
        except ImportError:  # before client/plan.py the helpers lived in client/core.py
            from psframework.client import core
            chunk, at, room = core._chunks, core._at, core.HEADER_ROOM
        ((part, pos, local),) = spec.split().split(rows)
        chunk_bytes = fx.settings.chunk_bytes if fx.settings is not None else 8 << 20
        limit = min(fx.limits.max_frame_bytes, chunk_bytes + room)
        row_bytes = 8 + (spec.row_bytes(part) if hasattr(spec, "row_bytes")
                         else spec.cols * np.dtype(spec.dtype).itemsize)

        def one() -> list:
            pieces = []
            for c in chunk(local.size, row_bytes, limit):
                pieces.append((part, local[c], at(pos, c)))
            return pieces
        return calls(one)
    st.time("client.chunks", chunks)
    st.time("client.values", lambda: calls(
        lambda values=_checks().values: values(fx.ones, spec, (1, COLS))))


def wire_stages(st: Stages, fx: Fixtures) -> None:
    limits, args, rows = fx.limits, fx.args, fx.rows
    row = fx.reply.arrays[0]
    st.time("encode.request", lambda: calls(lambda: encode(
        Message(Kind.REQUEST, RID, "pull_rows", MODEL, args, (rows,)), limits)))
    st.time("encode.reply", lambda: calls(lambda: encode(
        Message(Kind.REPLY, RID, args={}, arrays=(row,)), limits)))
    push_args, push_arrays = fx.push.args, fx.push.arrays
    st.time("encode.push_request", lambda: calls(lambda: encode(
        Message(Kind.REQUEST, RID, "push_rows", MODEL, push_args, push_arrays), limits)))

    header = [int(Kind.REQUEST), RID, "pull_rows", MODEL, args,
              [[rows.dtype.str, list(rows.shape)]]]
    packed = msgpack.packb(header, use_bin_type=True)
    st.time("msgpack.packb_header", lambda: calls(lambda: msgpack.packb(header,
                                                                        use_bin_type=True)))
    st.time("msgpack.unpackb_header", lambda: calls(lambda: msgpack.unpackb(
        packed, raw=False, use_list=True)))

    def decoding(data: bytes, op: str):
        def make():
            dec = FrameDecoder(limits)

            def one():
                dec.receive_data(data)
                return dec.next_event()
            got = one()
            if not (isinstance(got, Message) and got.op == op):
                raise AssertionError(f"decoded {got!r}")
            return calls(one)
        return make
    st.time("decode.request", decoding(fx.pull_frame, "pull_rows"))
    st.time("decode.reply", decoding(fx.reply_frame, ""))
    st.time("decode.push_request", decoding(fx.push_frame, "push_rows"))


def shard_stages(st: Stages, fx: Fixtures) -> None:
    rows, values = fx.push_in.arrays

    def partition():
        if fx.partition is None:
            raise RuntimeError("no Partition (see skipped: fixture.partition)")
        return fx.partition
    st.time("shard.pull_rows", lambda: calls(lambda p=partition(): p.pull_rows(rows)))
    st.time("shard.push_rows", lambda: calls(lambda p=partition(): p.push_rows(rows, values)))

    def window():
        from psframework.transport.once import OnceLog
        try:
            from psframework.shard.server import READS
        except ImportError:
            READS = ("ping", "pull_rows", "pull_elems", "stats")
        s = fx.settings
        return OnceLog(s.dedup_window, s.dedup_bytes, reads=READS)

    done = ({}, ())
    st.time("shard.once_read", lambda: calls(
        lambda handle=window().wrap(lambda m: done): handle(fx.pull_in)))
    st.time("shard.once_tagged", lambda: (each(window().wrap(lambda m: done)),
                                          fx.tagged(os.urandom(8), itertools.count(1))))

    def push(m: Message):
        partition().push_rows(m.arrays[0], m.arrays[1])
        return {}, ()
    st.time("shard.once_push", lambda: (each(window().wrap(push)),
                                        fx.tagged(os.urandom(8), itertools.count(1))))

    def shard():
        if fx.shard is None:
            raise RuntimeError("no Shard (see skipped: fixture.shard)")
        return fx.shard
    st.time("shard.handle_pull", lambda: calls(lambda s=shard(): s.handle(fx.pull_in)))
    st.time("shard.handle_push", lambda: (each(shard().handle),
                                          fx.tagged(os.urandom(8), itertools.count(1))))


async def _leaf() -> None:
    return None


def loop_stages(st: Stages, loop: asyncio.AbstractEventLoop) -> None:
    def on_loop(body):
        return lambda n, arg: loop.run_until_complete(body(n, arg))

    async def future(n: int, _: Any) -> None:
        new = asyncio.get_running_loop().create_future
        for _ in range(n):
            f = new()
            f.set_result(None)
            await f

    async def layer(n: int, _: Any) -> None:
        for _ in range(n):
            await _leaf()

    async def call_soon(n: int, _: Any) -> None:
        running = asyncio.get_running_loop()
        for _ in range(n):
            f = running.create_future()
            running.call_soon(f.set_result, None)
            await f

    st.time("asyncio.future", lambda: on_loop(future))
    st.time("asyncio.await_layer", lambda: on_loop(layer))
    st.time("asyncio.call_soon", lambda: on_loop(call_soon))


def sync_stages(st: Stages) -> None:
    other = new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        st.time("sync.run_coroutine_threadsafe", lambda: calls(
            lambda: asyncio.run_coroutine_threadsafe(_leaf(), other).result()))
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()

    client = None

    def client_run():
        nonlocal client
        from psframework import Client
        client = Client(ADDRESS)  # never connects: run() only hands coroutines over
        return calls(lambda: client.run(_leaf()))
    try:
        st.time("sync.client_run", client_run)
    finally:
        if client is not None:
            client.close()


def syscall_stages(st: Stages) -> None:
    payload = bytes(300)
    buf = bytearray(4096)

    def pair(a: socket.socket, b: socket.socket):
        def one() -> None:
            a.sendall(payload)
            got = 0
            while got < len(payload):
                got += b.recv_into(buf)
        return calls(one)

    a, b = socket.socketpair()
    with a, b:
        st.time("syscall.socketpair_300", lambda: pair(a, b))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
        with a, b:
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            st.time("syscall.tcp_300", lambda: pair(a, b))


# -- in process: the whole library, no sockets -----------------------------------------------
class MemoryTransport:
    """A transport whose writes reach the `peer` protocol in the next loop step, as a
    socket read would, with no system call; `own` is the protocol it carries writes for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.own = None
        self.peer = None
        self.closing = False

    def write(self, data) -> None:
        if not self.closing:
            self.loop.call_soon(_deliver, self.peer, bytes(data))

    def writelines(self, buffers) -> None:
        self.write(b"".join(buffers))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.own.connection_lost, None)

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 0)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def _deliver(protocol, data: bytes) -> None:
    if not hasattr(protocol, "get_buffer"):
        protocol.data_received(data)
        return
    view = memoryview(data)
    while view.nbytes:
        dst = protocol.get_buffer(view.nbytes)
        n = min(dst.nbytes, view.nbytes)
        dst[:n] = view[:n]
        view = view[n:]
        protocol.buffer_updated(n)


async def wire_in_memory(fx: Fixtures):
    """An AsyncClient whose one connection is in memory to the fixture's Shard; and a
    function that closes it all."""
    from psframework import AsyncClient
    try:
        from psframework.client.model_info import ModelInfo
    except ImportError:  # older layouts
        from psframework.client.core import ModelInfo
    from psframework.transport import ClientConnection, ServerConnection, Traffic
    if fx.shard is None:
        raise RuntimeError("no Shard (see skipped: fixture.shard)")
    loop = asyncio.get_running_loop()
    settings = fx.settings.model_copy(update={"retry_deadline": 2.0})  # fail fast, never hang
    limits = settings.limits
    server = ServerConnection(fx.shard.handle, limits, None, lambda: "shard-in-memory", Traffic())
    client = ClientConnection(limits, None)
    to_client, to_server = MemoryTransport(loop), MemoryTransport(loop)
    to_client.own, to_client.peer = server, client
    to_server.own, to_server.peer = client, server
    server.connection_made(to_client)
    client.connection_made(to_server)
    await asyncio.wait_for(asyncio.shield(client.ready), 5)
    aio = AsyncClient(ADDRESS, settings)
    aio._conns[ADDRESS] = client
    aio._models[MODEL] = ModelInfo.from_wire({
        "name": MODEL, "uid": UID, "type": "tables",
        "config": {"tables": [fx.spec.to_wire()]}, "tables": [fx.spec.to_wire()],
        "placement": ["shard-in-memory"] * PARTS, "servers": {"shard-in-memory": ADDRESS}})
    got = await asyncio.wait_for(aio.pull_rows(MODEL, "values", [ROW]), 5)
    want = fx.shard.models[MODEL].parts[0]["values"].data[ROW:ROW + 1]
    if not np.array_equal(got, want):
        raise AssertionError("the in-process pull does not return the row")

    def close() -> None:
        client.close()
        server.close()
    return aio, close


def in_process_stages(st: Stages, fx: Fixtures, loop: asyncio.AbstractEventLoop) -> dict:
    try:
        aio, close = loop.run_until_complete(wire_in_memory(fx))
    except Exception as e:  # noqa: BLE001
        st.skipped["in_process"] = _why(e)
        log(f"in_process: skipped ({st.skipped['in_process']})")
        return {}

    async def pulls(n: int, _: Any) -> None:
        for _ in range(n):
            await aio.pull_rows(MODEL, "values", [ROW])

    async def pushes(n: int, _: Any) -> None:
        for _ in range(n):
            await aio.push_rows(MODEL, "values", [ROW], fx.ones)

    st.time("in_process.pull", lambda: lambda n, a: loop.run_until_complete(pulls(n, a)))
    st.time("in_process.push", lambda: lambda n, a: loop.run_until_complete(pushes(n, a)))
    close()
    loop.run_until_complete(asyncio.sleep(0.01))
    return {"pull_us": st.us.pop("in_process.pull", None),
            "push_us": st.us.pop("in_process.push", None)}


# -- end to end and the floors ---------------------------------------------------------------
def end_to_end(shards: int, n: int) -> tuple[dict, dict]:
    from psframework import AsyncClient
    raw = RawSocket()
    echo = UvloopEcho(256)
    lat: dict[str, list[float]] = {k: [] for k in ("raw", "echo", "pull", "push", "sync")}
    picks = np.random.default_rng(0).integers(0, ROWS, n)
    ones = np.ones((1, COLS), np.float32)
    buf = memoryview(bytearray(256))
    log(f"starting a LocalCluster with {shards} shards")
    try:
        with LocalCluster(shards=shards) as cluster:
            client = cluster.client()
            client.create_matrix(MODEL, ROWS, COLS, init=init.normal(seed=2), exists_ok=True)

            async def rounds() -> None:
                await echo.connect()
                async with AsyncClient(cluster.address) as c:
                    async def raw_rtt(r) -> None:
                        raw.fetch(buf)  # blocking: nothing else runs on this loop meanwhile

                    async def pull(r) -> None:
                        await c.pull_rows(MODEL, "values", [r])

                    async def push(r) -> None:
                        await c.push_rows(MODEL, "values", [r], ones)
                    lat.update(await rounds_on_loop(
                        [("raw", raw_rtt), ("echo", lambda r: echo.trip()),
                         ("pull", pull), ("push", push)], picks))
                await echo.disconnect()
            run(rounds())
            for r in picks[:100]:
                client.pull_rows(MODEL, "values", [r])
            for r in picks:
                t = time.perf_counter()
                client.pull_rows(MODEL, "values", [r])
                lat["sync"].append(time.perf_counter() - t)
    finally:
        raw.close()
        echo.close()
    e2e = {"async_pull_us": percentiles(lat["pull"]), "async_push_us": percentiles(lat["push"]),
           "sync_pull_us": percentiles(lat["sync"])}
    e2e["sync_minus_async_pull_us"] = round(e2e["sync_pull_us"]["p50"]
                                            - e2e["async_pull_us"]["p50"], 1)
    floors = {"raw_socket_rtt_us": percentiles(lat["raw"]),
              "uvloop_echo_rtt_us": percentiles(lat["echo"])}
    log(f"end to end: {e2e}; floors: {floors}")
    return e2e, floors


def accounted(stages: dict[str, float]) -> tuple[dict[str, int], float, list[str]]:
    """The stages one async pull passes through, their sum (µs), and those not timed."""
    shard = (["shard.handle_pull"] if "shard.handle_pull" in stages
             else ["shard.once_read", "shard.pull_rows"])
    wanted = {"client.indices": 1, "client.split": 1, "client.chunks": 1, "encode.request": 1,
              "decode.request": 1, **{s: 1 for s in shard}, "encode.reply": 1,
              "decode.reply": 1, "asyncio.future": 1, "syscall.tcp_300": 2}
    used = {k: m for k, m in wanted.items() if k in stages}
    return used, round(sum(stages[k] * m for k, m in used.items()), 2), \
        [k for k in wanted if k not in stages]


def loop_overhead_us(loops: int, reps: int) -> float:
    return per_call_us(calls(lambda: None), loops, reps, 1.0)


def main() -> None:
    a = arguments(__doc__, "fewer calls, repetitions and requests, for a smoke test (< 20 s)",
                  "repetitions of each stage's loop (default 7, or 3 with --quick)")
    reps = a.reps or (3 if a.quick else 7)
    loops, budget = (2_000, 0.03) if a.quick else (20_000, 0.2)
    n_e2e = 300 if a.quick else 2000
    started = time.perf_counter()
    log(f"psframework from {os.path.dirname(psframework.__file__)}")

    st = Stages(loops, reps, budget)
    fx = Fixtures(st.skipped)
    client_stages(st, fx)
    wire_stages(st, fx)
    shard_stages(st, fx)
    loop = new_event_loop()
    try:
        loop_stages(st, loop)
        in_process = in_process_stages(st, fx, loop)
        if fx.shard is not None:
            try:
                loop.run_until_complete(fx.shard.stop())
            except Exception as e:  # noqa: BLE001
                log(f"shard stop: {_why(e)}")
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    sync_stages(st)
    syscall_stages(st)

    e2e, floors = end_to_end(a.shards, n_e2e)
    used, total, missing = accounted(st.us)
    if in_process.get("pull_us") is not None:
        in_process["e2e_minus_in_process_pull_us"] = round(
            e2e["async_pull_us"]["p50"] - in_process["pull_us"], 1)
    result = {
        "benchmark": "request_path",
        "machine": machine(),
        "config": {"quick": a.quick, "reps": reps, "max_loops": loops,
                   "rep_budget_s": budget, "shards": a.shards, "matrix": [ROWS, COLS],
                   "parts": PARTS, "dtype": "float32", "row_bytes": COLS * 4,
                   "e2e_requests": n_e2e, "loop": _loop_kind(),
                   "loop_overhead_us": loop_overhead_us(loops, reps),
                   "psframework_file": psframework.__file__},
        "stages": st.us,
        "accounted_stages": used,
        "accounted_us": total,
        "accounted_missing": missing,
        "unaccounted_us": round(e2e["async_pull_us"]["p50"] - total, 2),
        "in_process": in_process,
        "end_to_end": e2e,
        "floors": floors,
        "skipped": st.skipped,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


def _loop_kind() -> str:
    loop = new_event_loop()
    try:
        return f"{type(loop).__module__}.{type(loop).__name__}"
    finally:
        loop.close()


if __name__ == "__main__":
    main()
