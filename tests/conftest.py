"""Shared fixtures: real server processes on 127.0.0.1, started through the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psframework import Client, LocalCluster, load_settings
from psframework.config import parse_address

PLUGINS = Path(__file__).parent / "plugins"
# The test plugin is "installed" only for the tests: its dist-info is on this path.
PLUGIN_ENV = {"PYTHONPATH": os.pathsep.join(
    [str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])])}
# Quick to notice what tests provoke, but patient with a busy machine: no test may fail
# because CI shares its cores (a shard stalled for seconds is slow, not dead).
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 5.0, "retry_deadline": 2.0,
        "request_timeout": 30.0, "connect_timeout": 30.0}
os.environ.setdefault("PSF_CONNECT_TIMEOUT", "30")  # this process's clients, likewise


@pytest.fixture(scope="session")
def cluster():
    """A master and 2 shards shared by the tests that do not break servers."""
    with LocalCluster(shards=2, env=PLUGIN_ENV, **FAST) as c:
        yield c


@pytest.fixture
def client(cluster):
    c = cluster.client()
    yield c
    c.close()


@pytest.fixture
def fresh_cluster():
    """A private cluster for tests that kill or disturb servers."""
    clusters = []

    def make(shards: int = 2, **kw) -> LocalCluster:
        c = LocalCluster(shards=shards, env=PLUGIN_ENV, **{**FAST, **kw}).start()
        clusters.append(c)
        return c
    yield make
    for c in clusters:
        c.stop()


class Proc:
    """A `psframework` CLI process whose first stdout line is read."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.popen = subprocess.Popen(
            [str(Path(sys.executable).parent / "psframework"), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # stderr: pytest's, never full
            env={**os.environ, **PLUGIN_ENV, **(env or {})}, text=True)
        self.line = self.popen.stdout.readline().strip()

    @property
    def address(self) -> str:
        return self.line.rsplit(" ", 1)[-1]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        for f in (self.popen.stdin, self.popen.stdout):
            f.close()


@pytest.fixture
def cli():
    procs: list[Proc] = []

    def start(*args: str, env: dict | None = None) -> Proc:
        p = Proc(*args, env=env)
        procs.append(p)
        return p
    yield start
    for p in reversed(procs):
        p.stop()


@pytest.fixture
def behind(cli):
    """start(make_proxy) -> (client, proxy): a master and one shard that every client
    reaches through `make_proxy((host, port))`."""
    proxies, clients = [], []

    def start(make_proxy, **client_settings):
        master = cli("serve", "master", "--port", "0")
        free = socket.create_server(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        proxy = make_proxy(("127.0.0.1", port))
        proxies.append(proxy)
        cli("serve", "shard", "--master", master.address, "--port", str(port),
            "--advertise", f"127.0.0.1:{proxy.port}", env=PLUGIN_ENV)
        client = Client(master.address, load_settings(**client_settings))
        clients.append(client)
        return client, proxy
    yield start
    for c in clients:
        c.close()
    for p in proxies:
        p.close()


def model_stats(client: Client, model: str) -> dict:
    """The stats of the one shard that hosts `model`."""
    (address,) = client.model(model).servers.values()
    return client.run(client.aio.request(address, "stats")).args


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until predicate() is truthy; return its value or fail after `timeout` (a bound
    against hanging, generous because CI machines are shared)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def listening(address: str) -> bool:
    """Something accepts connections at HOST:PORT."""
    try:
        with socket.create_connection(parse_address(address), timeout=1):
            return True
    except OSError:
        return False


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- Spark ---------------------------------------------------------------------------------
SPARK_SECRET = "spark-test-secret"
SPARK_BASE = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              "spark.sql.shuffle.partitions": "4", "spark.task.maxFailures": "1"}


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory):
    """make(master="local[4]", conf=None) -> a SparkSession with SPARK_BASE and `conf`.

    Spark runs one SparkContext per JVM: asking for another master or configuration
    stops the current session (a new context on the running JVM takes a second or two;
    the JVM itself starts once). The JVM is launched by a bare context first, because
    the configuration it is launched with becomes every later context's default, and one
    test's secret must not leak into another's. Executors import the test modules from
    this folder, and write to a temp dir of pytest's (TMPDIR), so shard logs do not pile
    up in /tmp."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    tmp = str(tmp_path_factory.mktemp("spark-executors"))
    # Python workers run the interpreter running the tests (a venv's, even unactivated),
    # not whatever `python3` comes first on PATH, unless the user chose one
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    current: dict = {}

    def make(master: str = "local[4]", conf: dict | None = None) -> SparkSession:
        key = (master, tuple(sorted((conf or {}).items())))
        if current.get("key") == key:
            return current["session"]
        if current:
            current.pop("session").stop()
        else:
            SparkContext(conf=SparkConf().setMaster("local[1]").setAppName("psframework-boot")
                         .setAll(list(SPARK_BASE.items()))).stop()
        settings = {**SPARK_BASE, "spark.executorEnv.TMPDIR": tmp,
                    # test modules hold functions that executors run
                    "spark.executorEnv.PYTHONPATH": str(Path(__file__).parent),
                    **(conf or {})}
        sc = SparkContext(conf=SparkConf().setMaster(master).setAppName("psframework-tests")
                          .setAll(list(settings.items())))
        sc.setLogLevel("ERROR")
        current.update(key=key, session=SparkSession(sc))
        return current["session"]
    yield make
    if current:
        current["session"].stop()


SECRET_CONF = {"spark.psframework.secret": SPARK_SECRET,
               "spark.executorEnv.PSF_SECRET": SPARK_SECRET}


@pytest.fixture
def spark(spark_session):
    """local[4] whose driver and executors share SPARK_SECRET through Spark configuration."""
    return spark_session("local[4]", SECRET_CONF)


@pytest.fixture(scope="module")
def secret_spark(spark_session):
    """`spark`, for a module's fixtures."""
    return spark_session("local[4]", SECRET_CONF)


@pytest.fixture(scope="module")
def secret_cluster():
    """A cluster of 2 shards with SPARK_SECRET, for a module's estimators in separate
    mode (parameterServerHost=secret_cluster.address)."""
    with LocalCluster(shards=2, secret=SPARK_SECRET, **FAST) as c:
        yield c
