"""Executor side of integrated mode: a Spark task that starts one shard server and returns.

The shard is `python -m psframework serve shard` in a new session (its own process
group), with stdin from /dev/null and its output in a log file, so nothing ties it to the
Python worker: neither the worker exiting (`spark.python.worker.reuse=false`) nor pyspark's
daemon signalling its process group at shutdown stops it. It lives until it is stopped or
its master has been unreachable for `master_grace` seconds. A thread of the worker reaps
it if the worker outlives it; otherwise the system does.

Its environment is the worker's (PSF_SECRET included, which Spark sets from
`spark.executorEnv.PSF_SECRET`) plus the driver's non-secret settings as PSF_* variables.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from psframework.cluster import ready_address, server_environment
from psframework.config import parse_address

__all__ = ["ShardProcess", "start_shard", "start_shard_task", "facing_address"]

LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class ShardProcess:
    """A shard server started on an executor. `error` is empty if it registered with the
    master; otherwise it says why not, with the end of the shard's log."""

    host: str
    pid: int
    address: str
    log: str
    error: str = ""


def facing_address(master: str) -> str:
    """The IP address of this machine's interface on the route to the master, which is
    where the driver and the other executors can reach a server on this machine. (A UDP
    connect only picks the route; it sends nothing.)"""
    host, port = parse_address(master)
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(sockaddr)
        return s.getsockname()[0]


def start_shard(master: str, settings: dict[str, Any], log_level: str,
                timeout: float) -> ShardProcess:
    """Start a shard for `master` on this machine; return once it has registered (or has
    failed, or `timeout` seconds have passed, when it is killed)."""
    host = facing_address(master)
    fd, log = tempfile.mkstemp(prefix="psframework-shard-", suffix=".log")
    cmd = [sys.executable, "-m", "psframework", "serve", "shard", "--master", master,
           "--host", host, "--port", "0", "--log-level", log_level]
    env = server_environment(os.environ.get("PSF_SECRET"), settings)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    threading.Thread(target=proc.wait, daemon=True, name="psframework-shard-reaper").start()
    deadline = time.monotonic() + timeout
    while True:
        text = Path(log).read_text(errors="replace")
        address = next(filter(None, map(ready_address, text.splitlines())), None)
        if address is not None:
            return ShardProcess(host, proc.pid, address, log)
        code = proc.poll()
        if code is not None or time.monotonic() > deadline:
            if code is None:
                proc.kill()
            why = (f"exited with code {code}" if code is not None
                   else f"did not register within {timeout:g}s and was killed")
            tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
            return ShardProcess(host, proc.pid, "", log,
                                f"shard on {host} {why}; end of its log {log}:\n{tail}")
        time.sleep(0.05)


def start_shard_task(_index: int, _rows: Iterable[Any], *, master: str,
                     settings: dict[str, Any], log_level: str,
                     timeout: float) -> Iterator[ShardProcess]:
    """`mapPartitionsWithIndex` function: one shard per partition."""
    yield start_shard(master, settings, log_level, timeout)
