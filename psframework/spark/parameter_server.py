"""The driver side: a parameter server for one Spark application, in one of two modes.

*Integrated* (no `host`): the master is a child process of the driver that watches its
stdin, so it ends with the driver, however the driver ends. A short Spark job starts the
shards on executors, one task per shard; each task returns as soon as its shard has
registered, so no task slot stays held. When a shard dies (its executor lost, or killed),
a thread of the driver starts a replacement the same way, and the master rebuilds the
backups and restores the partitions it can there. `close` stops the master, then asks
the shards to shut down; shards it cannot reach (a crashed driver never asks) exit by
themselves once their master has been unreachable for `master_grace` seconds.

*Separate* (`host="HOST:PORT"`): connect to a cluster started with `psframework serve`;
closing leaves it running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import subprocess
import threading
import time
from typing import Any

from psframework.client import Client
from psframework.cluster import listening_address, server_environment, start_server, stop_servers
from psframework.config import load_settings, parse_address
from psframework.errors import ConfigError, ConnectionLostError, PSError
from psframework.spark.interpreter import executor_environment_error, pin_local_interpreter
from psframework.spark.job import collect_within
from psframework.spark.launch import ShardProcess, start_shard_task
from psframework.spark.secret import EXECUTOR_SECRET_CONF, SECRET_CONF, application_secret

__all__ = ["SparkParameterServer", "pin_local_interpreter"]

log = logging.getLogger("psframework.spark")

DEFAULT_SHARDS = 3  # Glint-FMPair's numParameterServers
# where each server is placed is decided here, and the secret travels by Spark configuration
RESERVED = {"host", "port", "advertise", "master", "secret", "log_level"}


class SparkParameterServer:
    """A parameter server for a Spark application.

        with SparkParameterServer(spark, num_shards=3) as ps:       # integrated
            handle = ps.client().create_matrix("w", 1000, 16, "float32")
            rdd.foreachPartition(lambda rows: train(handle, rows))  # executors push/pull

        with SparkParameterServer(spark, host="ps-master:13370") as ps:  # separate
            ...

    `timeout`: seconds for the master to start and all shards to register (integrated).
    `log_level`: of the servers started here. `settings`: further server settings for
    integrated mode (e.g. `master_grace=5`), passed to master and shards as PSF_* variables.
    The secret is not an argument: see `psframework.spark.secret`.
    """

    def __init__(self, spark: Any, num_shards: int | None = None, *, host: str | None = None,
                 timeout: float = 60.0, log_level: str = "WARNING", **settings: Any) -> None:
        self.spark = spark
        self.num_shards = num_shards
        self.host = host
        self.timeout = timeout
        self.log_level = log_level
        self.settings = settings
        self.master = ""
        self.secret: str | None = None
        self.shards: list[ShardProcess] = []  # started by this object (integrated mode)
        self._master_process: subprocess.Popen | None = None
        self._client: Client | None = None
        self._closing = threading.Event()
        self._keeper: threading.Thread | None = None
        self.replaced = 0  # shards started in place of dead ones

    @property
    def integrated(self) -> bool:
        return self.host is None

    @property
    def _wanted(self) -> int:
        """The shards integrated mode keeps alive: num_shards (`_validate` defaults it)."""
        return DEFAULT_SHARDS if self.num_shards is None else self.num_shards

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "SparkParameterServer":
        """Start (integrated) or connect to (separate) the cluster; validate arguments."""
        self._validate()
        pin_local_interpreter(self.spark.sparkContext)
        self.secret = application_secret(self.spark)
        try:
            if self.host is None:  # integrated
                self._start_integrated()
            else:
                host, port = parse_address(self.host)
                self.master = f"{host}:{port}"
                self.client().ping()
        except BaseException:
            self.close()
            raise
        return self

    def _validate(self) -> None:
        if self.integrated:
            if self.num_shards is None:
                self.num_shards = DEFAULT_SHARDS
            if self.num_shards < 1:
                raise ConfigError(f"num_shards must be at least 1, got {self.num_shards}")
            if self.timeout <= 0:
                raise ConfigError(f"timeout must be positive, got {self.timeout}")
            fixed = RESERVED & set(self.settings)
            if fixed:
                raise ConfigError(
                    f"{sorted(fixed)} cannot be set here: addresses are chosen by the "
                    f"SparkParameterServer and the secret comes from {SECRET_CONF} and "
                    f"{EXECUTOR_SECRET_CONF}")
            load_settings(**self.settings, log_level=self.log_level)  # invalid ones fail by name
        elif self.num_shards is not None or self.settings:
            raise ConfigError(
                "num_shards and server settings are for integrated mode; a separate cluster "
                f"(host={self.host!r}) was configured where `psframework serve` started it")

    def _start_integrated(self) -> None:
        deadline = time.monotonic() + self.timeout
        bind, advertise = _driver_address(self.spark.sparkContext)
        args = ["master", "--host", bind, "--port", "0", "--log-level", self.log_level]
        if advertise:
            args += ["--advertise", advertise]
        self._master_process = start_server(*args, env=server_environment(self.secret,
                                                                           self.settings))
        self.master = listening_address(self._master_process, deadline - time.monotonic())
        self._start_shards(deadline)
        self._await_shards(deadline)
        self._keeper = threading.Thread(target=self._keep_shards, name="psf-shard-keeper",
                                        daemon=True)
        self._keeper.start()

    def _keep_shards(self) -> None:
        """Start a shard for every one that died, as long as this server is open."""
        every = max(load_settings(**self.settings).heartbeat_interval * 2, 0.5)
        while not self._closing.wait(every):
            try:
                missing = self._wanted - self._alive()
                if missing > 0:
                    log.warning("%d psframework shard(s) died; starting replacements",
                                missing)
                    self._start_shards(time.monotonic() + self.timeout, missing)
                    self.replaced += missing
            except Exception as e:  # noqa: BLE001 - keep watching; the next round retries
                if not self._closing.is_set():
                    log.warning("could not replace dead psframework shards: %s", e)

    def _start_shards(self, deadline: float, count: int | None = None) -> None:
        n = self._wanted if count is None else count
        sc = self.spark.sparkContext
        task = functools.partial(start_shard_task, master=self.master, settings=self.settings,
                                 log_level=self.log_level,
                                 timeout=max(deadline - time.monotonic(), 0.1))
        rdd = sc.parallelize(range(n), n).mapPartitionsWithIndex(task)
        step = f"the Spark job starting {n} psframework shards"
        try:
            started = collect_within(rdd, deadline - time.monotonic(),
                                     f"psframework: start {n} shards for master {self.master}")
        except Exception as e:
            raise (executor_environment_error(e, sc, step)
                   or ConnectionLostError(f"{step} failed: {e}")) from e
        if started is None:
            raise ConnectionLostError(
                f"only {self._alive()} of {n} psframework shards started within "
                f"{self.timeout:g}s: Spark did not run the {n} short tasks that start them in "
                "time. Give the application more executors or cores (or wait until other "
                "jobs free theirs), or pass a larger timeout")
        self.shards += [s for s in started if not s.error]
        failed = [s.error for s in started if s.error]
        if failed:
            # a shard runs its worker's interpreter and imports more (numba): it may fail
            missing = executor_environment_error(  # where the worker did not
                Exception("\n".join(failed)), sc, f"{len(failed)} of {n} psframework shards")
            if missing is not None:
                raise missing
            raise ConnectionLostError(
                f"{len(failed)} of {n} psframework shards did not start (executors must reach "
                f"the master at {self.master} and have psframework installed):\n"
                + "\n".join(failed))

    def _await_shards(self, deadline: float) -> None:
        while (alive := self._alive()) < self._wanted:
            if time.monotonic() > deadline:
                raise ConnectionLostError(
                    f"only {alive} of {self._wanted} psframework shards are alive at master "
                    f"{self.master} after {self.timeout:g}s; their logs are "
                    f"{[s.log for s in self.shards]} on the executors")
            time.sleep(0.05)

    def _alive(self) -> int:
        return sum(s["alive"] for s in self.client().status()["servers"])

    def close(self) -> None:
        """Integrated mode: stop the master, then the shards, and wait (bounded) until
        they are gone. Separate mode: close only this driver's client; the cluster keeps
        running."""
        self._closing.set()
        if self._keeper is not None:
            self._keeper.join()
            self._keeper = None
        shards = {s.address for s in self.shards}
        if (self._master_process is not None and self._master_process.poll() is None
                and self._client is not None):
            try:  # also those that started when starting failed as a whole
                shards |= {s["address"] for s in self._client.status()["servers"]}
            except PSError:
                pass
        stopping = self._master_process is not None
        if stopping:  # first: shards stopping under a live master would look like failures
            stop_servers([self._master_process])
            self._master_process = None
        if stopping and self._client is not None:
            # else they would wait master_grace seconds to go
            self._shut_down(self._client, shards)
        if self._client is not None:
            self._client.close()
            self._client = None
        if stopping:
            self._await_gone(shards)
        self.shards = []

    def _shut_down(self, client: Client, shards: set[str]) -> None:
        """Ask the shards this object started to stop now; those that cannot be reached
        still stop by themselves once the master is gone."""
        addresses = sorted(shards)
        aio = client.aio

        async def shutdown() -> list:
            return await asyncio.gather(*(aio.request(a, "shutdown", retry=False)
                                          for a in addresses), return_exceptions=True)
        for address, outcome in zip(addresses, client.run(shutdown())):
            if isinstance(outcome, PSError):
                log.info("psframework shard %s did not take the shutdown: %s", address, outcome)

    def _await_gone(self, addresses: set[str]) -> None:
        s = load_settings(**self.settings)
        patience = s.master_grace + s.heartbeat_interval + s.heartbeat_timeout + s.connect_timeout
        deadline = time.monotonic() + patience
        while addresses and time.monotonic() < deadline:
            addresses = {a for a in addresses if _listening(a)}
            if addresses:
                time.sleep(0.1)
        if addresses:
            log.warning("psframework shards %s still listen %.0fs after their master stopped; "
                        "they should exit soon, or stop them on their hosts", sorted(addresses),
                        patience)

    # -- use -----------------------------------------------------------------------------
    def client(self) -> Client:
        """The driver's client of this cluster (one, reused; closed by `close`)."""
        if not self.master:
            raise ConfigError("this SparkParameterServer is not started: use it in a `with` "
                              "block or call start() first")
        if self._client is None:
            self._client = Client(self.master, secret=self.secret)
        return self._client

    def __enter__(self) -> "SparkParameterServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = f"integrated, shards={len(self.shards)}" if self.integrated else "separate"
        return f"SparkParameterServer({self.master or 'not started'}, {mode})"


def _driver_address(sc: Any) -> tuple[str, str | None]:
    """Where the master listens and the host it advertises to executors. In local modes
    (`local[N]`, `local-cluster[...]`) every process is on this machine: loopback."""
    if sc.master.startswith("local"):
        return "127.0.0.1", None
    conf = sc.getConf()
    host = conf.get("spark.driver.host")
    return conf.get("spark.driver.bindAddress", host), host


def _listening(address: str) -> bool:
    try:
        with socket.create_connection(parse_address(address), timeout=1.0):
            return True
    except OSError:
        return False
