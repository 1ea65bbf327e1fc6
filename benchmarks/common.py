"""What every benchmark here shares: stderr logging, the command line, machine facts, and
a uvloop echo server in another process (the floor of an asyncio request/reply)."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import socket
import sys
import time

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
