"""Fault tolerance with real server processes and kill -9: replicated partitions lose no
acknowledged push, checkpoints bound what an unreplicated one loses, a restarted master
carries on from its state directory, a busy shard is not declared dead, and training
goes on through a failover. Every final state is checked against a numpy replay of the
pushes the clients were told had been applied."""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest

from psframework import Client, ConnectionLostError, load_settings
from psframework.cli import format_status
from models.fmpair import LocalFMPair
from models.synthetic import make_synthetic

from conftest import wait_until

# a client patient enough for a failover found by heartbeats rather than by a closed port
PATIENT = load_settings(retry_deadline=60.0, request_timeout=60.0, connect_timeout=30.0)


def batches(seed: int, n: int, rows: int, cols: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pushes of small integers: their sums are exact in float32 and int64 alike."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, rows, 16), rng.integers(-3, 4, (16, cols)))
            for _ in range(n)]


def push_through(client, name: str, work: list, kill, at: int, dtype: str) -> None:
    """Push `work` from several clients at once — one stream from a client process of
    its own, the others from threads sharing this process's client — and `kill()` once
    the first thread is `at` pushes in, while the others are mid-stream."""
    ready = threading.Event()
    errors = []

    def writer(i: int) -> None:
        try:
            for j, (rows, values) in enumerate(work[i]):
                client.push_rows(name, "values", rows, values.astype(dtype))
                if i == 0 and j == at:
                    ready.set()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
            ready.set()
    proc = multiprocessing.get_context("spawn").Process(
        target=push_from_a_process, args=(client.master, name, work[-1], dtype))
    proc.start()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(work) - 1)]
    for t in threads:
        t.start()
    ready.wait(120)
    kill()
    for t in threads:
        t.join(180)
    proc.join(180)
    assert not errors, errors
    assert proc.exitcode == 0


def push_from_a_process(master: str, name: str, work: list, dtype: str) -> None:
    with Client(master, settings=PATIENT) as c:
        for rows, values in work:
            c.push_rows(name, "values", rows, values.astype(dtype))


def replay(shape, work) -> np.ndarray:
    want = np.zeros(shape, np.int64)
    for stream in work:
        for rows, values in stream:
            np.add.at(want, rows, values)
    return want


def victim_of(client, cluster, part: int, model: str, role: str = "primary") -> int:
    """Index in cluster.shard_processes of the shard holding `model`'s partition `part`
    as its primary (or first backup)."""
    info = next(m for m in client.status()["models"] if m["name"] == model)
    name = info["placement"][part] if role == "primary" else info["backups"][part][0]
    pid = next(s["pid"] for s in client.status()["servers"] if s["name"] == name)
    return next(i for i, p in enumerate(cluster.shard_processes) if p.pid == pid)


@pytest.mark.parametrize("partition_by", ["rows", "cols"])
def test_replicated_pushes_survive_a_killed_primary_exactly(fresh_cluster, partition_by):
    cluster = fresh_cluster(3, replicas=2)
    c = cluster.client(settings=PATIENT)
    c.create_matrix("m", 90, 6, "float32", partition_by=partition_by)
    model = c.status()["models"][0]
    assert model["replicas"] == 2 and all(len(b) == 1 and b[0] != p for p, b in
                                          zip(model["placement"], model["backups"]))
    work = [batches(seed, 60, 90, 6) for seed in range(3)]
    victim = victim_of(c, cluster, 0, "m")
    push_through(c, "m", work, lambda: cluster.kill_shard(victim), 15, "float32")
    np.testing.assert_array_equal(c.pull_rows("m", "values", np.arange(90)), replay((90, 6), work))
    after = wait_until(lambda: [m for m in c.status()["models"] if not m["degraded"]])[0]
    assert after["recoveries"] >= 1  # a backup was promoted, and a new one built
    dead = [s["name"] for s in c.status()["servers"] if not s["alive"]]
    assert len(dead) == 1 and dead[0] not in {*after["placement"], *sum(after["backups"], [])}
    # the rebuilt copies hold the same state: kill another shard, nothing is lost again
    other = next(i for i, p in enumerate(cluster.shard_processes)
                 if i != victim and p.poll() is None)
    cluster.kill_shard(other)
    np.testing.assert_array_equal(c.pull_rows("m", "values", np.arange(90)), replay((90, 6), work))


@pytest.mark.parametrize("rows", [40, 400_000])
def test_a_killed_backup_costs_no_push_and_is_replaced(fresh_cluster, rows):
    """Pushes go on while the new backup is built (the big partition takes a while to
    copy), and it gets them all: killing the primary afterwards loses nothing."""
    cluster = fresh_cluster(3, replicas=2)
    c = cluster.client(settings=PATIENT)
    c.create_matrix("one", rows, 3, "int64", parts=1)
    work = [batches(seed, 150, rows, 3) for seed in (7, 8)]
    victim = victim_of(c, cluster, 0, "one", role="backup")
    gone = c.status()["models"][0]["backups"][0][0]
    push_through(c, "one", work, lambda: cluster.kill_shard(victim), 10, "int64")
    every = np.arange(rows)
    np.testing.assert_array_equal(c.pull_rows("one", "values", every), replay((rows, 3), work))
    model = wait_until(lambda: [m for m in c.status()["models"]
                                if m["backups"][0] and m["backups"][0] != [gone]])[0]
    alive = {s["name"] for s in c.status()["servers"] if s["alive"]}
    assert {model["placement"][0], model["backups"][0][0]} == alive
    cluster.kill_shard(victim_of(c, cluster, 0, "one"))  # and the new backup holds it all
    np.testing.assert_array_equal(c.pull_rows("one", "values", every), replay((rows, 3), work))


def test_unreplicated_partitions_come_back_from_the_checkpoint_losing_only_later_pushes(
        fresh_cluster, tmp_path):
    """replicas=1: a partition that dies is restored from the model's last checkpoint; the
    pushes acknowledged after it are lost on that partition and only there, and a resend
    of a push the checkpoint holds is not applied twice."""
    cluster = fresh_cluster(3, checkpoint_dir=str(tmp_path))
    c = cluster.client(settings=PATIENT)
    c.create_matrix("m", 60, 4, "int64", partitioner="cyclic")
    before, after_ckpt, after_kill = (batches(s, 30, 60, 4) for s in (1, 2, 3))
    for rows, values in before:
        c.push_rows("m", "values", rows, values)
    ckpt = c.checkpoint("m")
    assert ckpt["pause"] >= 0 and (tmp_path / ckpt["path"]).is_dir()
    for rows, values in after_ckpt:
        c.push_rows("m", "values", rows, values)
    victim = victim_of(c, cluster, 1, "m")
    cluster.kill_shard(victim)
    for rows, values in after_kill:
        c.push_rows("m", "values", rows, values)
    got = c.pull_rows("m", "values", np.arange(60))
    model = c.status()["models"][0]
    assert model["recoveries"] == 1 and not model["lost"]
    restored = np.arange(60) % 3 == 1  # cyclic: partition 1 holds rows 1, 4, 7, ...
    everything = replay((60, 4), [before, after_ckpt, after_kill])
    without = replay((60, 4), [before, after_kill])
    np.testing.assert_array_equal(got[~restored], everything[~restored])
    np.testing.assert_array_equal(got[restored], without[restored])
    assert not np.array_equal(everything[restored], without[restored])  # the bound is tight


def test_partitions_with_no_live_copy_come_back_from_the_checkpoint_on_a_new_shard(
        fresh_cluster, tmp_path):
    """Every shard dies: the partitions wait, and a shard that registers restores them
    from the checkpoint (with the pushes it holds, and not those after it)."""
    cluster = fresh_cluster(2, checkpoint_dir=str(tmp_path))
    c = cluster.client(settings=PATIENT)
    m = c.create_matrix("m", 20, 2, "int64")
    m.push_rows(np.arange(20), np.ones((20, 2), np.int64))
    c.checkpoint("m")
    m.push_rows(np.arange(20), np.ones((20, 2), np.int64))  # after it: lost with the shards
    for i in range(2):
        cluster.kill_shard(i)
    wait_until(lambda: len(c.status()["models"][0]["lost"]) == 2)
    with pytest.raises(ConnectionLostError, match="comes back from the model's checkpoint"):
        m.pull_rows(np.arange(20))
    cluster.add_shards(1)
    wait_until(lambda: not c.status()["models"][0]["lost"])
    np.testing.assert_array_equal(m.pull_rows(np.arange(20)), np.ones((20, 2)))
    m.push_rows([0], [[5, 5]])  # and it takes pushes again
    assert m.pull_rows([0]).tolist() == [[6, 6]]


def test_a_partition_with_no_copy_left_is_reported_as_lost(fresh_cluster):
    cluster = fresh_cluster(2)
    c = cluster.client(settings=PATIENT)
    m = c.create_vector("v", 10, "int64")
    cluster.kill_shard(victim_of(c, cluster, 0, "v"))
    with pytest.raises(ConnectionLostError, match="lost.*no backup.*no checkpoint"):
        m.pull(np.arange(10))


def test_periodic_checkpoints_are_kept_and_shown(fresh_cluster, tmp_path):
    cluster = fresh_cluster(2, checkpoint_dir=str(tmp_path), checkpoint_interval=0.3)
    c = cluster.client()
    c.create_vector("v", 10, "int64", replicas=2).push(np.arange(10), np.arange(10))
    seen = []

    def new_checkpoint():
        ck = c.status()["models"][0]["checkpoint"]
        if ck and ck["save_id"] not in [s["save_id"] for s in seen]:
            seen.append(ck)
        return len(seen) >= 3
    wait_until(new_checkpoint)
    assert seen[0]["time"] < seen[1]["time"] < seen[2]["time"]
    assert len({s["path"] for s in seen}) == 1 and all(s["age"] >= 0 for s in seen)
    # each replaces the one before: the files of the published one, and at most those
    # of one being written now, are all there is
    saves = {p.name.split(".")[-2] for p in (tmp_path / seen[0]["path"]).glob("*.npy")}
    assert len(saves) <= 2
    text = format_status(c.status())  # what `psframework status` prints
    assert "replicas: 2  checkpoint: " in text and "checkpoint: none" not in text
    assert "partitions: 0->shard-" in text and "+shard-" in text  # primary+backup


def test_a_busy_shard_still_heartbeats_and_keeps_its_partitions(fresh_cluster):
    """A UDF that holds a shard's event loop for longer than the heartbeat timeout does
    not get the shard declared dead: its heartbeats come from their own thread."""
    cluster = fresh_cluster(2, heartbeat_timeout=1.5, replicas=2)
    c = cluster.client(settings=PATIENT)
    c.create_model("busy", "scaler", {"rows": 4, "cols": 2})
    before = c.status()["models"][0]
    # small arrays: the threaded op runs on the event loop, which sleeps 4 s
    c.call("busy", "nap", {"seconds": 4.0}, parts=[0], once=True)
    status = c.status()
    assert all(s["alive"] for s in status["servers"])
    assert status["models"][0]["placement"] == before["placement"]
    assert status["models"][0]["recoveries"] == 0


def test_a_restarted_master_carries_on_from_its_state_dir(fresh_cluster, tmp_path):
    cluster = fresh_cluster(2, state_dir=str(tmp_path), master_grace=60.0)
    c = cluster.client(settings=PATIENT)
    c.create_matrix("m", 30, 3, "int64")
    work = [batches(seed, 40, 30, 3) for seed in (4, 5)]

    def restart() -> None:
        cluster.kill_master()
        cluster.restart_master()
    push_through(c, "m", work, restart, 10, "int64")
    np.testing.assert_array_equal(c.pull_rows("m", "values", np.arange(30)), replay((30, 3), work))
    status = c.status()
    assert [m["name"] for m in status["models"]] == ["m"]
    assert sorted(s["name"] for s in status["servers"] if s["alive"]) == ["shard-1", "shard-2"]
    c.create_vector("new", 5)  # and it serves catalog changes as before
    assert sorted(m["name"] for m in c.status()["models"]) == ["m", "new"]


def precision_at_10(model, data) -> float:
    ids, _ = model.recommend(k=10)
    test = data.test.tocsr()
    users = np.flatnonzero(np.diff(test.indptr))
    hits = [np.isin(ids[u], test.indices[test.indptr[u]:test.indptr[u + 1]]).sum()
            for u in users]
    return float(np.mean(hits) / 10)


@pytest.mark.parametrize("copies", ["replicas", "checkpoints"])
def test_fmpair_fit_goes_on_through_a_killed_shard(fresh_cluster, tmp_path, copies):
    """With a backup the partition's primary moves there; without, the partition comes
    back from its last checkpoint (and the batch steps in flight there are dropped)."""
    data = make_synthetic(n_users=300, n_items=150, n_artists=10, interactions_per_user=10,
                          seed=3)
    params = dict(dims=32, epochs=10, step_size=0.1, loss="warp", seed=1)
    reference = precision_at_10(LocalFMPair(**params, master=fresh_cluster(3).address)
                                .fit(data.train), data)
    cluster = fresh_cluster(3, **({"replicas": 2} if copies == "replicas" else
                                  {"checkpoint_dir": str(tmp_path), "checkpoint_interval": 0.1}))
    killed = []

    def kill_once(epoch, *_):
        if epoch == 2:
            if copies == "checkpoints":  # at least one checkpoint exists by now
                wait_until(lambda: all(m["checkpoint"] for m in cluster.client().status()["models"]))
            killed.append(epoch)
            cluster.kill_shard(1)
    model = LocalFMPair(**params, master=cluster.address, callback=kill_once).fit(data.train)
    assert killed and len(model.history_) == params["epochs"]
    status = cluster.client().status()
    assert sum(not s["alive"] for s in status["servers"]) == 1
    assert precision_at_10(model, data) >= 0.9 * reference
    assert reference > 0.1  # of at most 0.2 (two test items per user): it learned


@pytest.mark.parametrize("which", ["mf_sgd", "pa"])
def test_mf_sgd_and_pa_fits_go_on_through_a_killed_shard(fresh_cluster, which):
    """The other training loops need nothing of their own: their pulls and pushes follow
    the partitions to the promoted backups."""
    if which == "mf_sgd":
        from models.mf_sgd import LocalMFSGD
        from models.synthetic_ratings import make_ratings
        data = make_ratings(200, 150, 30, seed=5)
        users, items, ratings = data.test

        def fit(master, callback=None):
            model = LocalMFSGD(rank=8, epochs=8, step_size=0.02, master=master, seed=2,
                               show_progress=False, callback=callback).fit(*data.train)
            return -np.sqrt(np.mean((model.predict(users, items) - ratings) ** 2))
    else:
        from models.pa import LocalPA
        from models.synthetic_text import make_messages
        data = make_messages(3000, vocabulary=2000, seed=6)

        def fit(master, callback=None):
            with LocalPA(hash_bits=12, max_iter=6, master=master, show_progress=False,
                         callback=callback) as model:
                model.fit(data.words[:2500], data.labels[:2500])
                return model.score(data.words[2500:], data.labels[2500:])
    reference = fit(fresh_cluster(3).address)
    cluster = fresh_cluster(3, replicas=2)
    killed = []

    def kill_once(epoch, entry):
        if epoch == 1:
            killed.append(epoch)
            cluster.kill_shard(0)
    got = fit(cluster.address, kill_once)
    assert killed and sum(not s["alive"] for s in cluster.client().status()["servers"]) == 1
    # within 10% of the fault-free run: RMSE (negated) or held-out accuracy
    assert got >= reference - 0.1 * abs(reference), (got, reference)
