"""What every benchmark here shares: stderr logging, the command line, machine facts, a
uvloop echo server in another process (the floor of an asyncio request/reply), and
`request_figures`: a model's hot requests timed beside a raw socket round trip and that
echo, as benchmarks/pullpush.py times one-row pulls."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, NamedTuple

import numpy as np

import psframework


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def arguments(doc: str, quick: str, reps: str) -> argparse.Namespace:
    """--quick, --shards and --reps, with this benchmark's help texts."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--shards", type=int, default=2, help="shards in the LocalCluster")
    p.add_argument("--reps", type=int, default=None, help=reps)
    return p.parse_args()


def machine() -> dict:
    """The facts that make numbers from different runs comparable, or not."""
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__,
            "psframework": psframework.__version__,
            "loadavg_1m": round(os.getloadavg()[0], 2)}


# -- a uvloop echo across processes: the floor of an asyncio request/reply ----------------------
SPARK_CONF = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              "spark.sql.shuffle.partitions": "2"}


def spark_session(app: str, **conf: str) -> Any:
    """A local[2] SparkSession for a benchmark (UI off, 2 shuffle partitions, `conf` on
    top), its workers running this interpreter, logging only errors."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    builder = SparkSession.builder.master("local[2]").appName(app)
    for key, value in {**SPARK_CONF, **conf}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _echo_server(port_pipe) -> None:
    """Child process: an asyncio Protocol on uvloop that writes back whatever it reads;
    exits when its one client disconnects."""
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency of psframework
        loop = asyncio.new_event_loop()
    done = loop.create_future()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                          socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

        def connection_lost(self, exc) -> None:
            if not done.done():
                done.set_result(None)

    server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
    port_pipe.send(server.sockets[0].getsockname()[1])
    loop.run_until_complete(done)
    server.close()
    loop.close()


class UvloopEcho:
    """The uvloop echo server in a child process (spawned, never forked: the parent may run
    client threads), and an asyncio Protocol client of it for the running loop:

        echo = UvloopEcho()              # starts the child
        await echo.connect()             # on the loop that will time the trips
        seconds = await echo.trip()      # one 256-byte request echoed back
        await echo.disconnect()          # on that loop too: the child then exits
        echo.close()                     # waits for the child (kills it if it stays)
    """

    def __init__(self, nbytes: int = 256) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_echo_server, args=(child,), daemon=True)
        self.proc.start()
        self.port = parent.recv()
        self.payload = bytes(nbytes)
        self.transport: asyncio.Transport | None = None
        self.got = 0
        self.waiting: asyncio.Future | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_connection(lambda: _EchoClient(self),
                                                         "127.0.0.1", self.port)
        self.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                           socket.TCP_NODELAY, 1)

    async def trip(self) -> float:
        """Seconds for one request out and its echo back (resolved in data_received)."""
        self.got = 0
        self.waiting = asyncio.get_running_loop().create_future()
        t = time.perf_counter()
        self.transport.write(self.payload)
        await self.waiting
        return time.perf_counter() - t

    async def disconnect(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            await asyncio.sleep(0.01)  # the close reaches the socket on a loop step

    def close(self) -> None:
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()


class _EchoClient(asyncio.Protocol):
    def __init__(self, echo: UvloopEcho) -> None:
        self.echo = echo

    def data_received(self, data: bytes) -> None:
        echo = self.echo
        echo.got += len(data)
        if echo.got >= len(echo.payload) and echo.waiting is not None and not echo.waiting.done():
            echo.waiting.set_result(None)


# -- a model's hot requests, beside a raw round trip and the uvloop echo -------------------------
class Request(NamedTuple):
    """One kind of request a model's worker sends. call(i): the i-th such request, an
    awaitable on the AsyncClient `prepare` was given (i counts up; pick inputs with it);
    trips: payload bytes of each of its round trips, in order (its arrays' bytes both
    ways, headers not counted), which a raw mirror moves; info: more JSON about it."""
    call: Callable[[int], Awaitable[Any]]
    trips: tuple[int, ...]
    info: dict


REQUEST_COUNTS = {False: (1000, 100, 2048), True: (100, 20, 128)}  # by --quick: rounds,
WINDOWS = (1, 16, 64)                                              # warm-up, pipelined calls


def request_figures(address: str, prepare: Callable[[Any], Awaitable[dict[str, Request]]],
                    quick: bool) -> dict:
    """Per-request latency and pipelined throughput of the requests that `prepare(client)`
    (a coroutine given an AsyncClient of `address`: it creates the models and returns
    {name: Request}) describes, measured as benchmarks/pullpush.py measures small pulls,
    with its RawSocket (a child process) and UvloopEcho:

    - latency: `rounds` rounds after `warmup_rounds` (REQUEST_COUNTS[quick]); every round
      one raw request/reply (8 bytes out, 256 back), one uvloop echo (256 bytes), and for
      each request one call and its raw mirror (one raw request/reply per trip, 8 bytes
      out and the trip's payload bytes back), the steps taking turns at going first;
      p50/p99 µs over the rounds after the warm-up.
    - pipelined: for each request and W in WINDOWS, `pipelined_calls` calls W at a time
      (asyncio.gather of W, then the next W), in two halves alternating with the raw
      mirror's (RawSocket.pipelined of the same W and count, once per trip size): ops/s.

    Returns {"seconds" (this function's, prepare's included), "rounds", "warmup_rounds",
    "pipelined_calls", "raw_socket_rtt_us", "uvloop_echo_rtt_us", name: {**info,
    "payload_bytes", "us", "raw_same_bytes_us", "p50_over_raw_rtt",
    "p50_over_raw_same_bytes", "pipelined_ops_per_s", "raw_pipelined_ops_per_s"}}. The
    caller's entry must be guarded by `if __name__ == "__main__"`: the raw server and the
    echo are spawned."""
    from pullpush import RawSocket, percentiles, rotated  # here: pullpush imports this module
    from psframework import AsyncClient
    from psframework.transport import run

    began = time.perf_counter()
    rounds, warmup, pipelined = REQUEST_COUNTS[quick]
    with ThreadPoolExecutor(2) as pool:  # the two children start at once
        started = pool.submit(RawSocket), pool.submit(UvloopEcho, 256)
    raw, echo = (f.result() for f in started)

    def mirror(buf: memoryview, trips: tuple[int, ...]) -> Callable[[int], Awaitable[None]]:
        async def one(i: int) -> None:
            for n in trips:  # blocking: nothing else runs on this loop meanwhile
                raw.fetch(buf[:n])
        return one

    async def pipelined_ops(r: Request, window: int, first: int) -> tuple[float, float]:
        """(ours, raw) ops/s of `pipelined` calls from call number `first` on, halves
        alternating: raw, ours, raw, ours."""
        secs = {"raw": 0.0, "ours": 0.0}
        at = first
        for half in (pipelined // 2, pipelined - pipelined // 2):
            secs["raw"] += sum(half / raw.pipelined(window, half, n) for n in r.trips)
            t = time.perf_counter()
            for k in range(at, at + half, window):
                await asyncio.gather(*(r.call(j) for j in range(k, min(k + window, at + half))))
            secs["ours"] += time.perf_counter() - t
            at += half
        return pipelined / secs["ours"], pipelined / secs["raw"]

    async def measure() -> dict:
        await echo.connect()
        try:
            async with AsyncClient(address) as client:
                requests = await prepare(client)
                buf = memoryview(bytearray(max([256] + [n for r in requests.values()
                                                        for n in r.trips])))
                steps = [("raw", mirror(buf, (256,))), ("echo", lambda i: echo.trip())]
                for name, r in requests.items():
                    steps += [(name, r.call), ("raw " + name, mirror(buf, r.trips))]
                lat: dict[str, list[float]] = {key: [] for key, _ in steps}
                for i in range(warmup + rounds):
                    for key, one in rotated(steps, i):
                        t = time.perf_counter()
                        await one(i)
                        if i >= warmup:
                            lat[key].append(time.perf_counter() - t)
                out: dict = {"rounds": rounds, "warmup_rounds": warmup,
                             "pipelined_calls": pipelined,
                             "raw_socket_rtt_us": percentiles(lat["raw"]),
                             "uvloop_echo_rtt_us": percentiles(lat["echo"])}
                rtt = out["raw_socket_rtt_us"]["p50"]
                log(f"requests: raw {out['raw_socket_rtt_us']} us, "
                    f"uvloop echo {out['uvloop_echo_rtt_us']} us")
                calls = warmup + rounds  # the next call's number
                for name, r in requests.items():
                    ours, same = percentiles(lat[name]), percentiles(lat["raw " + name])
                    got = out[name] = {
                        **r.info, "payload_bytes": list(r.trips), "us": ours,
                        "raw_same_bytes_us": same, "p50_over_raw_rtt": round(ours["p50"] / rtt, 2),
                        "p50_over_raw_same_bytes": round(ours["p50"] / same["p50"], 2),
                        "pipelined_ops_per_s": {}, "raw_pipelined_ops_per_s": {}}
                    for window in WINDOWS:
                        rates = await pipelined_ops(r, window, calls)
                        calls += pipelined
                        got["pipelined_ops_per_s"][window] = round(rates[0])
                        got["raw_pipelined_ops_per_s"][window] = round(rates[1])
                    log(f"requests: {name} {ours} us (raw, same bytes: {same}), pipelined "
                        f"{got['pipelined_ops_per_s']} ops/s "
                        f"(raw {got['raw_pipelined_ops_per_s']})")
                return out
        finally:
            await echo.disconnect()

    try:
        out = run(measure())
    finally:
        raw.close()
        echo.close()
    return {"seconds": round(time.perf_counter() - began, 1), **out}
