"""Faults under Spark, on a real local SparkSession: an integrated parameter server
replaces a shard that dies, and a failed FMPair fit leaves its checkpoint to resume from
(checked against the checkpoint's own files)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from psframework import Client, LocalCluster, StorageError
from psframework.spark import SparkParameterServer
from psframework.storage import files
from models.fmpair import FMPair

from conftest import FAST, PLUGIN_ENV, SPARK_SECRET, wait_until

SECRET_CONF = {"spark.psframework.secret": SPARK_SECRET,
               "spark.executorEnv.PSF_SECRET": SPARK_SECRET}


def test_an_integrated_cluster_replaces_a_dead_shard_and_rebuilds_its_copies(spark):
    with SparkParameterServer(spark, num_shards=2, timeout=60, replicas=2, **FAST) as ps:
        c = ps.client()
        m = c.create_matrix("m", 50, 4, "int64")
        want = np.arange(200).reshape(50, 4)
        m.push_rows(np.arange(50), want)
        first = {s["name"]: s["pid"] for s in c.status()["servers"]}
        victim = sorted(first)[0]
        os.kill(first[victim], signal.SIGKILL)
        # a replacement registers, and the partitions get their second copies on it
        wait_until(lambda: ps.replaced == 1 and sum(s["alive"] for s in c.status()["servers"]) == 2
                   and not c.status()["models"][0]["degraded"], timeout=90)
        np.testing.assert_array_equal(m.to_numpy(), want)
        # the copies built on the replacement are whole: lose the other original, too
        survivor = next(n for n in first if n != victim)
        os.kill(first[survivor], signal.SIGKILL)
        wait_until(lambda: not [s for s in c.status()["servers"]
                                if s["name"] == survivor and s["alive"]])
        np.testing.assert_array_equal(m.to_numpy(), want)


def interactions_frame(session, n_users=200, n_items=120, per_user=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(int(u), int(i)) for u in range(n_users)
            for i in rng.choice(n_items, per_user, replace=False)]
    return session.createDataFrame(rows, "user long, item long")


def test_a_failed_fit_names_its_checkpoint_and_resumes_from_it(spark_session, tmp_path):
    session = spark_session("local[4]", SECRET_CONF)
    df = interactions_frame(session).cache()
    with LocalCluster(2, env=PLUGIN_ENV, secret=SPARK_SECRET, checkpoint_dir=str(tmp_path),
                      **FAST) as cluster:
        params = dict(numDims=8, maxIter=400, stepSize=0.1, seed=3, checkpointInterval=2,
                      parameterServerHost=cluster.address)
        c = cluster.client()

        def kill_after_a_checkpoint():
            wait_until(lambda: any(m["checkpoint"] for m in c.status()["models"]), 120)
            for p in cluster.shard_processes:
                p.send_signal(signal.SIGKILL)
        killer = threading.Thread(target=kill_after_a_checkpoint)
        killer.start()
        with pytest.raises(Exception) as failed:
            FMPair(**params).fit(df)
        killer.join()
        note = " ".join(getattr(failed.value, "__notes__", []))
        assert "FMPair.fit failed" in note and "resumeFrom=" in note, note
        directory = note.split("resumeFrom='")[1].split("'")[0]
        done = int(note.split("after epoch ")[1].split(",")[0])
        assert done >= 2 and done % 2 == 0 and Path(directory).parent == tmp_path

        cluster.add_shards(2)
        # resumed with nothing left to do, the model is the checkpoint's, file for file
        manifest = files.read_manifest(directory)
        saved = {}
        for table in ("factors", "linear"):
            parts = sorted((r for r in manifest.files if r.table == table), key=lambda r: r.part)
            arrays = [np.load(Path(directory) / r.file) for r in parts]
            saved[table] = np.concatenate(arrays, axis=1 if table == "factors" else 0)
        same = FMPair(**{**params, "maxIter": done, "resumeFrom": directory}).fit(df)
        assert same.history == []
        np.testing.assert_array_equal(same.state.factors_, saved["factors"])
        np.testing.assert_array_equal(same.state.linear_, saved["linear"])
        # and with epochs left, training goes on from there
        more = FMPair(**{**params, "maxIter": done + 2, "resumeFrom": directory}).fit(df)
        assert [h["epoch"] for h in more.history] == [done, done + 1]
        assert not np.array_equal(more.state.factors_, saved["factors"])
        plain = c.save(more.ps_model, tmp_path / "plain")  # a save, not a fit's checkpoint
        with pytest.raises(StorageError, match="not a checkpoint a fit wrote"):
            FMPair(**{**params, "resumeFrom": plain}).fit(df)


def shard_processes() -> list[tuple[int, str]]:
    """(pid, master address) of every `psframework serve shard` process here."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            words = [w.decode() for w in (d / "cmdline").read_bytes().split(b"\0") if w]
        except OSError:
            continue
        if "serve" in words and "shard" in words and "--master" in words:
            found.append((int(d.name), words[words.index("--master") + 1]))
    return found


def test_an_integrated_fmpair_fit_goes_on_through_a_killed_shard(spark_session):
    """replicas=2: a shard killed while fit trains costs nothing; the parameter server
    starts a replacement meanwhile. The fit's loss ends within 10% of a fault-free one."""
    session = spark_session("local[4]", SECRET_CONF)
    df = interactions_frame(session, n_users=300, n_items=150, per_user=10).cache()
    params = dict(numDims=8, maxIter=12, stepSize=0.1, seed=3, numParameterServers=3,
                  replicas=2, loss="warp")
    reference = FMPair(**params).fit(df)
    before = {pid for pid, _ in shard_processes()}  # none of the fit below
    killed = []

    def kill_one_once_training():
        def training():
            fresh = [(pid, m) for pid, m in shard_processes() if pid not in before]
            if len(fresh) < 3:
                return None
            with Client(fresh[0][1], secret=SPARK_SECRET) as c:
                ops = [s["ops"].get("dotprod", 0) for s in c.status()["servers"]]
            return fresh[0][0] if sum(ops) > 0 else None
        pid = wait_until(training, 120)
        os.kill(pid, signal.SIGKILL)
        killed.append(time.monotonic())
    killer = threading.Thread(target=kill_one_once_training)
    killer.start()
    model = FMPair(**params).fit(df)
    ended = time.monotonic()
    killer.join()
    assert killed and killed[0] < ended  # the shard died while fit trained
    assert len(model.history) == params["maxIter"]
    assert model.history[-1]["loss"] <= 1.1 * reference.history[-1]["loss"]
