"""A shard's heartbeats, sent from their own thread and event loop, over their own
connection to the master, so that they never wait behind work: a shard whose event loop
is busy in a long UDF or a big copy still beats, and is slow, not dead.

The shard's loop refreshes the stats the beats carry (`report`) when it can; the beat
sends whatever is latest. What the beats learn goes back to the shard's loop through
callbacks: a beat was answered (which extends the shard's lease on its partitions), the
master does not know this shard (it restarted, or declared the shard dead), or the
master has been unreachable for `master_grace` seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

from psframework.config import Settings, parse_address
from psframework.errors import PSError, UnknownModelError
from psframework.transport import ClientConnection, connect
from psframework.transport.loop import new_event_loop

__all__ = ["Heartbeat"]


class Heartbeat:
    def __init__(self, settings: Settings, *, name: Callable[[], str],
                 stats: Callable[[], dict], unknown: Callable[[], object],
                 unreachable: Callable[[str], object], answered: Callable[[float], object]) -> None:
        self.settings = settings
        self._name = name
        self._stats = stats  # read from this thread: must return a ready-made dict
        self._unknown = unknown
        self._unreachable = unreachable
        self._answered = answered  # called with the send time of each beat answered
        self._loop = new_event_loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="psf-heartbeat", daemon=True)
        self._tls = settings.client_tls()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop beating, at once, and wait for the thread to end (a shard running as a
        thread of a bigger process must not leave this one behind)."""
        self._stop.set()
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed already
            pass
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _wake(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._beat())
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()

    async def _beat(self) -> None:
        s = self.settings
        assert s.master is not None  # a shard beats only when it has a master
        host, port = parse_address(s.master)
        conn: ClientConnection | None = None
        last_ok = time.monotonic()
        while not self._stop.is_set():
            try:
                if conn is None or not conn.is_open:
                    conn = await connect(host, port, limits=s.limits, secret=s.secret_bytes,
                                         timeout=s.heartbeat_timeout, ssl_context=self._tls)
                sent = time.monotonic()
                await conn.request("heartbeat", args={"name": self._name(),
                                                      "stats": self._stats()},
                                   timeout=s.heartbeat_timeout)
                last_ok = sent
                self._answered(sent)
            except UnknownModelError:  # the master does not know us: register again
                self._unknown()
            except PSError as e:
                if time.monotonic() - last_ok > s.master_grace:
                    self._unreachable(str(e))
                    break
            await asyncio.sleep(s.heartbeat_interval)
        if conn is not None:
            conn.close()
