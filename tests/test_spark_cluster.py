"""Spark integration on a real local SparkSession: integrated mode (master on the driver,
shards started by executors), separate mode, the secret through Spark configuration,
worker reuse on and off, and typed errors when shards cannot start. Every table delta is
a small integer, so the sums the driver pulls equal numpy's exactly, in any order."""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from psframework import AuthError, Client, ConfigError, ConnectionLostError, LocalCluster
from psframework.spark import SparkParameterServer, executor_client
from psframework.spark.secret import SECRET_CONF
from conftest import SPARK_SECRET, listening, running, wait_until

FAST = {"heartbeat_interval": 0.2, "master_grace": 1.0}  # shards exit ~1 s after the master
ROWS, COLS = 50, 4
NO_REUSE = {"spark.python.worker.reuse": "false"}  # and no secret on either side


# -- functions that run in executors (this module is on their PYTHONPATH) -------------------
def delta(i: int) -> np.ndarray:
    return (np.arange(COLS) + i % 7 - 3).astype(np.float64)[None]


def expected_sum(n: int) -> np.ndarray:
    out = np.zeros((ROWS, COLS))
    for i in range(n):
        out[i % ROWS] += delta(i)[0]
    return out


def push_partition(matrix, rows):
    client = executor_client(matrix.master)
    for i in rows:
        matrix.push_rows([i % ROWS], delta(i))
    yield os.getpid(), id(client), matrix.client is client


def count_partition(vector, items):
    idx = np.array([i % 10 for i in items])
    executor_client(vector.master).push_rows(vector.model, vector.table, idx,
                                             np.ones(idx.size, "int64"))


def hold_slot(directory, index, _rows):
    """Keep a task slot busy until `directory/release` exists."""
    Path(directory, f"holding-{index}").touch()
    deadline = time.monotonic() + 120
    while not Path(directory, "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield index


# -- helpers -----------------------------------------------------------------------------------
def push_and_check(spark, ps, name: str, tasks: int) -> list[tuple]:
    matrix = ps.client().create_matrix(name, ROWS, COLS, "float64")
    rdd = spark.sparkContext.parallelize(range(40 * tasks), tasks)
    seen = rdd.mapPartitions(functools.partial(push_partition, matrix)).collect()
    np.testing.assert_array_equal(matrix.to_numpy(), expected_sum(40 * tasks))
    assert all(handle_uses_it for _, _, handle_uses_it in seen)
    return seen


def assert_gone(master: str, shards) -> None:
    """After close: nothing listens any more, and the shard processes have exited."""
    assert not listening(master)
    assert not any(listening(s.address) for s in shards)
    wait_until(lambda: not any(running(s.pid) for s in shards), timeout=10)


# -- integrated mode ---------------------------------------------------------------------------
def test_integrated_shards_on_executors_take_pushes_and_the_driver_pulls_the_exact_sum(spark):
    with SparkParameterServer(spark, num_shards=2, timeout=60, **FAST) as ps:
        assert ps.secret == SPARK_SECRET
        assert ps.master.startswith("127.0.0.1:")  # local mode: loopback
        shards = list(ps.shards)
        assert len({s.address for s in shards}) == 2 and all(running(s.pid) for s in shards)
        # the tasks that started them have returned: no Spark job holds a slot, yet the
        # shards stay registered and alive
        wait_until(lambda: spark.sparkContext.statusTracker().getActiveJobsIds() == [])
        alive = [s["address"] for s in ps.client().status()["servers"] if s["alive"]]
        assert sorted(alive) == sorted(s.address for s in shards)

        seen = push_and_check(spark, ps, "sums", tasks=8)
        clients = {}
        for pid, client_id, _ in seen:
            clients.setdefault(pid, set()).add(client_id)
        assert len(clients) < 8  # 8 tasks in at most 4 reused Python workers...
        assert all(len(ids) == 1 for ids in clients.values())  # ...one client each
        master = ps.master
    assert_gone(master, shards)


def test_shards_that_get_no_task_slot_in_time_are_a_quick_typed_error(spark, tmp_path):
    sc = spark.sparkContext
    slots = sc.defaultParallelism
    holder = threading.Thread(target=lambda: sc.parallelize(range(slots), slots)
                              .mapPartitionsWithIndex(functools.partial(hold_slot, str(tmp_path)))
                              .collect())
    holder.start()
    try:
        wait_until(lambda: len(list(tmp_path.glob("holding-*"))) == slots, timeout=60)
        ps = SparkParameterServer(spark, num_shards=2, timeout=3, **FAST)
        with pytest.raises(ConnectionLostError, match="more executors or cores") as e:
            ps.start()
        assert "0 of 2" in str(e.value) and "larger timeout" in str(e.value)
        assert not listening(ps.master)
    finally:
        (tmp_path / "release").touch()
        holder.join(60)


def test_a_shard_that_cannot_reach_its_master_is_a_typed_error_with_its_log(spark):
    # no handshake completes within a microsecond: each shard gives up and exits
    ps = SparkParameterServer(spark, num_shards=2, timeout=60, connect_timeout=1e-6, **FAST)
    with pytest.raises(ConnectionLostError, match="2 of 2 psframework shards did not start") as e:
        ps.start()
    assert "exited with code 2" in str(e.value) and "could not connect to" in str(e.value)
    assert not listening(ps.master)  # the master it started is stopped again


# -- the secret -------------------------------------------------------------------------------
@pytest.mark.parametrize("driver_secret, hint", [
    ("not-the-executors-secret", "differ"),
    ("", "driver has none"),
])
def test_a_wrong_or_missing_driver_secret_fails_before_anything_starts(spark, driver_secret,
                                                                       hint):
    spark.conf.set(SECRET_CONF, driver_secret)
    try:
        ps = SparkParameterServer(spark, num_shards=1)
        with pytest.raises(ConfigError, match=hint):
            ps.start()
        assert ps.master == ""
    finally:
        spark.conf.set(SECRET_CONF, SPARK_SECRET)


def test_a_cluster_with_another_secret_refuses_the_driver(spark):
    with LocalCluster(shards=1, secret="another-secret") as cluster:
        with pytest.raises(AuthError):
            SparkParameterServer(spark, host=cluster.address).start()


# -- separate mode ----------------------------------------------------------------------------
def test_separate_mode_uses_a_running_cluster_and_leaves_it_running(spark):
    with LocalCluster(shards=2, secret=SPARK_SECRET) as cluster:
        with SparkParameterServer(spark, host=cluster.address) as ps:
            assert ps.master == cluster.address and ps.shards == []
            vector = ps.client().create_vector("counts", 10, "int64")
            spark.sparkContext.parallelize(range(1000), 4).foreachPartition(
                functools.partial(count_partition, vector))
        assert cluster.master_process.poll() is None
        with Client(cluster.address, secret=SPARK_SECRET) as c:
            assert sum(s["alive"] for s in c.status()["servers"]) == 2
            np.testing.assert_array_equal(c.pull_rows("counts", "values", np.arange(10)),
                                          np.full(10, 100))


def test_arguments_are_checked_before_anything_starts(spark):
    for kwargs, hint in [({"num_shards": 0}, "at least 1"),
                         ({"num_shards": 1, "secret": "x"}, "spark.psframework.secret"),
                         ({"num_shards": 1, "heartbeat_interval": -1}, "heartbeat_interval"),
                         ({"host": "127.0.0.1:1", "num_shards": 2}, "integrated mode")]:
        ps = SparkParameterServer(spark, **kwargs)
        with pytest.raises(ConfigError, match=hint):
            ps.start()
        assert ps.master == ""


# -- worker reuse off (another SparkContext) ------------------------------------------------
def test_shards_outlive_their_python_workers_when_worker_reuse_is_off(spark_session):
    spark = spark_session("local[4]", NO_REUSE)
    with SparkParameterServer(spark, num_shards=2, timeout=60, **FAST) as ps:
        assert ps.secret is None  # no secret configured on either side
        shards = list(ps.shards)
        for name in ("first", "second"):  # the workers that started the shards have exited
            seen = push_and_check(spark, ps, name, tasks=4)
            assert len({pid for pid, _, _ in seen}) == 4  # a new worker for every task
        assert all(running(s.pid) for s in shards)
        assert sum(s["alive"] for s in ps.client().status()["servers"]) == 2
        master = ps.master
    assert_gone(master, shards)


def test_a_driver_secret_the_executors_do_not_get_fails_before_anything_starts(spark_session):
    spark = spark_session("local[4]", NO_REUSE)
    spark.conf.set(SECRET_CONF, "only-the-driver-has-it")
    try:
        ps = SparkParameterServer(spark, num_shards=1)
        with pytest.raises(ConfigError, match="spark.executorEnv.PSF_SECRET"):
            ps.start()
        assert ps.master == ""
    finally:
        spark.conf.unset(SECRET_CONF)


# -- executors in JVMs of their own (opt-in: starting them takes about 20 s) ----------------
@pytest.mark.skipif(not os.environ.get("PSF_SPARK_LOCAL_CLUSTER"),
                    reason="local-cluster mode starts two executor JVMs (~20 s); "
                           "set PSF_SPARK_LOCAL_CLUSTER=1 to run it")
def test_local_cluster_executors_start_shards_and_get_the_secret_through_spark_conf(
        spark_session):
    spark = spark_session("local-cluster[2,1,1024]", {
        "spark.psframework.secret": SPARK_SECRET, "spark.executorEnv.PSF_SECRET": SPARK_SECRET})
    with SparkParameterServer(spark, num_shards=2, timeout=120, **FAST) as ps:
        shards = list(ps.shards)
        assert sum(s["alive"] for s in ps.client().status()["servers"]) == 2
        push_and_check(spark, ps, "sums", tasks=4)
        master = ps.master
    assert_gone(master, shards)


def test_local_python_workers_get_the_drivers_interpreter_unless_one_was_chosen(
        spark, monkeypatch):
    """pyspark's default worker interpreter is whatever `python3` is first on PATH; in a
    local mode the driver's own (which has psframework) is the one that works."""
    import sys
    from psframework.spark.parameter_server import pin_local_interpreter
    sc = spark.sparkContext
    before = sc.pythonExec
    try:
        monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
        sc.pythonExec = "python3"
        pin_local_interpreter(sc)
        assert sc.pythonExec == sys.executable
        monkeypatch.setenv("PYSPARK_PYTHON", "/opt/chosen/python")  # the user's choice stands
        sc.pythonExec = "/opt/chosen/python"
        pin_local_interpreter(sc)
        assert sc.pythonExec == "/opt/chosen/python"
    finally:
        sc.pythonExec = before
    # and the workers really run it
    assert sc.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect() == [before]
