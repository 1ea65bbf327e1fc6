"""Run a master or a shard in this process until it is told to stop: SIGINT/SIGTERM,
a `shutdown` request (`psframework stop`), the master going away (shards), or — with
`watch_stdin` — the parent closing our stdin, so that servers started by a LocalCluster
never outlive the program that started them. Before serving, `check_package` makes sure
`psframework` is the installed package, not a directory of that name that shadows it.
`ServerThread` runs one on a thread of a process that does other work (an embedded
cluster: nothing to start but a thread, kernels already loaded)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from psframework.config import Settings
from psframework.errors import ConfigError, ConnectionLostError
from psframework.master import Master
from psframework.shard import Shard
from psframework.transport import run

__all__ = ["serve_forever", "configure_logging", "exit_now", "ServerThread", "check_package"]


def check_package() -> None:
    """Refuse to serve when `import psframework` found something other than this package:
    a directory named psframework in the working directory (say, the parent of a clone
    named psframework) is imported as an empty namespace package before the installed
    one, so plugins then fail with "module 'psframework' has no attribute 'Model'"."""
    package = sys.modules.get("psframework")
    if package is not None and hasattr(package, "Model"):
        return
    real = Path(__file__).resolve().parent
    found = list(getattr(package, "__path__", [])) or [getattr(package, "__file__", "?")]
    raise ConfigError(
        f"'import psframework' found {', '.join(map(str, found))} instead of the installed "
        f"package ({real}): a directory named psframework in the working directory "
        f"({os.getcwd()}) or on PYTHONPATH shadows it, and plugins would fail with \"module "
        "'psframework' has no attribute 'Model'\". Start the server from another directory, "
        "or rename that directory")


def tune_allocator() -> None:
    """Keep freed memory in the process (glibc): a server allocates and frees similar
    temporaries for every request, and returning them to the kernel each time costs page
    faults on the next request (measured: 10-30% of a shard's time on FMPair batches)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: trim only beyond 1 GiB of free top
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: mmap only blocks of 32 MiB and more
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def allow_connections(max_connections: int) -> None:
    """Raise this process's open-file limit (soft, up to the hard one) so that
    `max_connections` sockets fit beside the files a server opens."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = max_connections + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            cap = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep the limit
        pass


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")


async def _serve(role: str, settings: Settings, watch_stdin: bool,
                 listen_fd: int | None) -> None:
    check_package()
    tune_allocator()
    allow_connections(settings.max_connections)
    server = Master(settings, listen_fd) if role == "master" else Shard(settings)
    address = await server.start()
    name = "master" if isinstance(server, Master) else f"shard {server.name}"
    print(f"psframework {name} listening on {address}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if watch_stdin:
        fd = sys.stdin.fileno()

        def on_stdin() -> None:
            if not os.read(fd, 65536):  # EOF: the parent is gone
                loop.remove_reader(fd)
                stop.set()
        loop.add_reader(fd, on_stdin)
    await _until_stopped(server, stop)
    logging.getLogger("psframework").info("%s stopped", name)


async def _until_stopped(server: Master | Shard, stop: asyncio.Event) -> None:
    """Serve until `stop` is set or the server stops by itself (a shutdown request; a
    shard whose master is gone), then stop the server."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.wait_stopped())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    await server.stop()


def serve_forever(role: str, settings: Settings, *, watch_stdin: bool = False,
                  listen_fd: int | None = None) -> None:
    """Block serving as `role` ('master' or 'shard'); a master listens on `listen_fd`
    when it is given (a socket bound by the process that started this one)."""
    run(_serve(role, settings, watch_stdin, listen_fd))


def exit_now(code: int) -> None:
    """End a server process that has stopped cleanly, without the interpreter's teardown:
    its state is on disk and its sockets closed, and unloading numba's compiled code and
    every module took longer than the rest of a stop (measured: ~0.1 s of a shard's
    0.17 s)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class ServerThread:
    """A master or a shard serving on its own event loop, on a thread of this process,
    until `stop()` (a shard also stops when its master is gone for master_grace)."""

    def __init__(self, role: str, settings: Settings) -> None:
        self.role = role
        self.address = ""
        self._server = Master(settings) if role == "master" else Shard(settings)
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=run, args=(self._main(),),
                                        name=f"psframework-{role}", daemon=True)

    def start(self, timeout: float) -> str:
        """Start serving; the address once it listens (a shard: once registered)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise ConnectionLostError(f"the embedded {self.role} did not start within "
                                      f"{timeout:g}s")
        if self._failed is not None:
            raise self._failed
        return self.address

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.address = await self._server.start()
        except BaseException as e:  # noqa: BLE001 - handed to the thread that waits
            self._failed = e
            await self._server.stop()
            return
        finally:
            self._ready.set()
        await _until_stopped(self._server, self._stop)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait (up to `timeout` seconds) for the thread to end."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread.ident is not None:
            self._thread.join(timeout)
