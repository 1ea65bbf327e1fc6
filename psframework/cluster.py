"""LocalCluster: a master and N shards as real processes on loopback, for notebooks,
tests, examples and `psframework serve local`.

    with LocalCluster(shards=2) as cluster:
        client = cluster.client()

Each server is a `python -m psframework serve ...` process. They watch their stdin, so
they exit when this process does, even if it is killed without cleaning up.

With `processes=False` the servers are threads of this process instead, each on its own
event loop, still talking TCP on loopback (dask's LocalCluster has the same switch). It
starts in milliseconds and shares the kernels this process has loaded — what the local
estimators use by default — but its Python work shares this process's GIL (the numba
kernels release it), and a server cannot be killed alone.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Sequence, cast

from psframework.config import load_settings
from psframework.errors import ConfigError, ConnectionLostError

__all__ = ["LocalCluster", "server_environment", "start_server", "listening_address",
           "ready_address", "stop_servers"]


def server_environment(secret: str | None, settings: dict[str, Any],
                       extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a server process: `extra` variables, `settings` as
    PSF_* variables, and PSF_SECRET set to `secret` (removed when it is None). The secret
    goes through the environment, never the command line, where `ps` would show it."""
    env = {**os.environ, **(extra or {})}
    env.update({f"PSF_{k.upper()}": str(v) for k, v in settings.items()})
    if secret is not None:
        env["PSF_SECRET"] = secret
    else:
        env.pop("PSF_SECRET", None)
    return env


def start_server(*args: str, env: dict[str, str], pass_fds: tuple[int, ...] = ()
                 ) -> subprocess.Popen:
    """`python -m psframework serve ARGS` as a child that watches its stdin, so it exits
    when this process does, even if this process is killed without cleaning up."""
    cmd = [sys.executable, "-m", "psframework", "serve", *args, "--watch-stdin"]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            pass_fds=pass_fds)


def ready_address(line: str) -> str | None:
    """The address in a server's ready line ("psframework ... listening on ADDR"), else None."""
    line = line.strip()
    if line.startswith("psframework ") and " listening on " in line:
        return line.rsplit(" ", 1)[-1]
    return None


def listening_address(proc: subprocess.Popen, timeout: float) -> str:
    """Wait for the ready line of a server started by `start_server`; return its address.
    A server that exits or stays silent for `timeout` seconds is killed, and the error
    says so."""
    deadline = time.monotonic() + timeout
    out = proc.stdout
    assert out is not None  # start_server pipes it
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = out.readline().decode()
                address = ready_address(line)
                if address is not None:
                    return address
                if not line and proc.poll() is not None:
                    break
    proc.kill()
    raise ConnectionLostError(
        f"server `{' '.join(cast(list, proc.args)[2:])}` did not start within {timeout:g}s "
        f"(exit code {proc.poll()}); its log is on stderr")


def stop_servers(procs: Sequence[subprocess.Popen | None]) -> None:
    """Terminate servers (all at once), wait for each, and close their pipes."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.terminate()
    for p in procs:
        if p is None:
            continue
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()


class LocalCluster:
    def __init__(self, shards: int = 2, *, processes: bool = True, secret: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, log_level: str = "WARNING",
                 env: dict[str, str] | None = None, startup_timeout: float = 60.0,
                 **settings: Any) -> None:
        """`settings` are extra server settings (e.g. heartbeat_timeout=1), passed as
        PSF_* variables; `env` adds environment variables for the server processes.
        `metrics_port=P` gives every server a Prometheus endpoint: the master on P, shard
        i on P + 1 + i (P = 0: each on a free port; `status` lists them).
        `processes=False`: the servers are threads of this process (see the module
        docstring); `log_level` and `env` are then this process's own business."""
        if shards < 1:
            raise ConfigError("a LocalCluster needs at least one shard")
        if not processes and env:
            raise ConfigError("env sets the server processes' environment; with "
                              "processes=False there are none (set os.environ instead)")
        self.processes = processes
        self.metrics_port = settings.pop("metrics_port", None)
        self.settings = settings
        self.num_shards = shards
        self.host = host
        self.port = port
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        # a misspelt or invalid setting fails here, by name
        load_settings(None, **settings, **self._metrics("master"))
        # like every other setting, the secret defaults to PSF_SECRET, so that clients
        # configured from the environment can talk to the cluster
        self.secret = secret if secret is not None else os.environ.get("PSF_SECRET")
        self.env = server_environment(self.secret, settings, env)
        self.master_process: subprocess.Popen | None = None
        self.shard_processes: list[subprocess.Popen] = []
        self.threads: list = []  # ServerThreads with processes=False, the master first
        self.address = ""
        self._clients: list = []

    def _metrics(self, role: str, shard: int = 0) -> dict[str, int]:
        """The metrics_port setting of the master or of shard number `shard`, if any."""
        if self.metrics_port is None:
            return {}
        offset = 0 if role == "master" or not self.metrics_port else 1 + shard
        return {"metrics_port": self.metrics_port + offset}

    @staticmethod
    def _flags(setting: dict[str, int]) -> tuple[str, ...]:
        return tuple(f for port in setting.values() for f in ("--metrics-port", str(port)))

    # -- processes -------------------------------------------------------------------
    def _launch(self, role: str, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        """`psframework serve ROLE ARGS` on this cluster's host, with its settings."""
        return start_server(role, *args, "--host", self.host, "--log-level", self.log_level,
                            env=self.env, pass_fds=pass_fds)

    def start(self) -> "LocalCluster":
        """Start the master and the shards at the same time: this process binds the
        master's socket and hands it down, so the shards can connect (and wait in its
        backlog) while the master is still starting."""
        if not self.processes:
            return self._start_threads()
        try:
            with self._listener() as listener:
                fd = listener.fileno()
                self.master_process = self._launch(
                    "master", "--port", str(self.port), "--listen-fd", str(fd),
                    *self._flags(self._metrics("master")), pass_fds=(fd,))
                port = listener.getsockname()[1]
            wildcard = self.host in ("0.0.0.0", "::", "")
            shards = self._start_shards(self.num_shards,
                                        f"{'127.0.0.1' if wildcard else self.host}:{port}")
            self.address = listening_address(self.master_process, self.startup_timeout)
            self._registered(shards)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_threads(self) -> "LocalCluster":
        try:
            self.address = self._thread("master", host=self.host, port=self.port,
                                        **self._metrics("master"))
            self.add_shards(self.num_shards)
        except BaseException:
            self.stop()
            raise
        return self

    def _thread(self, role: str, **where: Any) -> str:
        from psframework.runner import ServerThread  # the servers' code: only when asked
        server = ServerThread(role, load_settings(secret=self.secret, **where, **self.settings))
        self.threads.append(server)
        return server.start(self.startup_timeout)

    def _listener(self) -> socket.socket:
        """The master's listening socket, bound here."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
        except OSError as e:
            sock.close()
            raise ConfigError(f"the master cannot listen on {self.host}:{self.port} "
                              f"({e.strerror or e}); is that port taken? port=0 picks a free "
                              "one") from None
        return sock

    def add_shards(self, n: int = 1) -> list:
        """Start `n` more shards, concurrently; all have registered when this returns.
        (With processes=False: ServerThreads, one after the other — each takes
        milliseconds.)"""
        if not self.processes:
            for _ in range(n):
                self._thread("shard", host=self.host, master=self.address,
                             **self._metrics("shard", len(self.threads) - 1))
            return self.threads[-n:]
        return self._registered(self._start_shards(n, self.address))

    def _start_shards(self, n: int, master: str) -> list[subprocess.Popen]:
        first = len(self.shard_processes)
        procs = [self._launch("shard", "--master", master,
                              *self._flags(self._metrics("shard", first + i)))
                 for i in range(n)]
        self.shard_processes.extend(procs)
        return procs

    def _registered(self, procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
        for p in procs:
            listening_address(p, self.startup_timeout)
        return procs

    def kill_shard(self, index: int) -> None:
        """Kill shard `index` with SIGKILL, as a crash would (for failure tests)."""
        self._processes_only("kill_shard")
        proc = self.shard_processes[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def kill_master(self) -> None:
        """Kill the master with SIGKILL, as a crash would (for failure tests)."""
        self._processes_only("kill_master")
        proc = self.master_process
        if proc is None:
            raise ConfigError("kill_master: this LocalCluster is stopped")
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart_master(self) -> None:
        """Start the master again at its address (after `kill_master`); with a state_dir
        setting it comes back with its catalog, and the shards carry on with it."""
        self._processes_only("restart_master")
        stop_servers([self.master_process])
        port = self.address.rsplit(":", 1)[1]
        self.master_process = self._launch("master", "--port", port,
                                           *self._flags(self._metrics("master")))
        listening_address(self.master_process, self.startup_timeout)

    def _processes_only(self, what: str) -> None:
        if not self.processes:
            raise ConfigError(f"{what} needs server processes; this LocalCluster runs its "
                              "servers as threads (processes=False)")

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()
        # the master first: shards that stop before it would look like failures to it
        for server in self.threads:
            server.stop()
        self.threads.clear()
        stop_servers([self.master_process])
        stop_servers(self.shard_processes)
        self.shard_processes.clear()
        self.master_process = None

    # -- clients ---------------------------------------------------------------------
    def client(self, **kwargs: Any):
        """A new synchronous Client for this cluster (closed when the cluster stops)."""
        from psframework.client import Client
        c = Client(self.address, secret=self.secret, **kwargs)
        self._clients.append(c)
        return c

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        shards = len(self.shard_processes) if self.processes else len(self.threads[1:])
        return f"LocalCluster({self.address or 'stopped'}, shards={shards})"
