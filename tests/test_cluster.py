"""A master and shards started through the `psframework` CLI, driven by several
concurrent client processes and threads; the final tables must equal a numpy replay of
the same operations (every delta is a small integer, so sums are exact in any order)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

import pytest

from psframework import Client, ConfigError, LocalCluster, init
from conftest import wait_until

SHAPES = {"rowmat": (300, 16), "colmat": (200, 24), "vec": (500,)}


def workload(seed: int, n: int):
    """The operations one client performs: (table, kind, indices..., values)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        which = rng.integers(4)
        if which == 0:
            rows = rng.integers(0, 300, size=rng.integers(1, 40))
            yield "rowmat", "rows", (rows,), rng.integers(-3, 4, size=(rows.size, 16)).astype(float)
        elif which == 1:
            rows = rng.integers(0, 200, size=rng.integers(1, 40))
            yield "colmat", "rows", (rows,), rng.integers(-3, 4, size=(rows.size, 24)).astype("f4")
        elif which == 2:
            k = rng.integers(1, 60)
            rows, cols = rng.integers(0, 200, size=k), rng.integers(0, 24, size=k)
            yield "colmat", "elems", (rows, cols), rng.integers(-3, 4, size=k).astype("f4")
        else:
            idx = rng.integers(0, 500, size=rng.integers(1, 80))
            yield "vec", "rows", (idx,), rng.integers(-5, 6, size=idx.size)


def replay(tables: dict[str, np.ndarray], seed: int, n: int) -> None:
    for name, kind, index, values in workload(seed, n):
        if kind == "rows":
            np.add.at(tables[name], index[0], values)
        else:
            np.add.at(tables[name], index, values)


def apply(client: Client, seed: int, n: int) -> None:
    for name, kind, index, values in workload(seed, n):
        if kind == "rows":
            client.push_rows(name, "values", index[0], values)
        else:
            client.push(name, "values", *index, values)
        client.pull_rows(name, "values", index[0])  # interleave reads with the writes


def client_process(master: str, seed: int, n: int) -> None:
    with Client(master) as c:
        apply(c, seed, n)


def test_cli_cluster_concurrent_clients_equal_numpy(cli):
    master = cli("serve", "master", "--port", "0", "--log-level", "warning")
    assert master.line.startswith("psframework master listening on 127.0.0.1:")
    shards = [cli("serve", "shard", "--master", master.address) for _ in range(2)]
    assert all(" listening on 127.0.0.1:" in s.line for s in shards)

    with Client(master.address) as c:
        c.create_matrix("rowmat", *SHAPES["rowmat"], "float64")
        c.create_matrix("colmat", *SHAPES["colmat"], "float32", partition_by="cols",
                        partitioner="cyclic")
        c.create_vector("vec", SHAPES["vec"][0], "int64", partitioner="cyclic")
        seeds, n = [1, 2, 3], 60
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=client_process, args=(master.address, s, n)) for s in seeds]
        for p in procs:
            p.start()
        # two more clients: threads sharing this process's client
        threads = [threading.Thread(target=apply, args=(c, s, n)) for s in (4, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        expected = {"rowmat": np.zeros(SHAPES["rowmat"]), "colmat": np.zeros(SHAPES["colmat"], "f4"),
                    "vec": np.zeros(SHAPES["vec"], np.int64)}
        for s in seeds + [4, 5]:
            replay(expected, s, n)
        for name, want in expected.items():
            got = c.pull_rows(name, "values", np.arange(want.shape[0]))
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        # element pulls in a shuffled order agree with the same reference
        rng = np.random.default_rng(0)
        r, k = rng.integers(0, 200, 500), rng.integers(0, 24, 500)
        np.testing.assert_array_equal(c.pull("colmat", "values", r, k), expected["colmat"][r, k])

    out = subprocess.run([str(Path(sys.executable).parent / "psframework"), "status",
                          "--master", master.address], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "servers: 2 alive of 2" in out.stdout
    assert "colmat (type tables, 2 partitions)" in out.stdout
    assert "values: float32[200x24] by cols (cyclic, 2 parts, aggregate add)" in out.stdout


def test_an_in_process_cluster_serves_like_processes_and_leaves_nothing_behind():
    """processes=False: master and shards are threads of this process. Concurrent clients
    (threads) end with the numpy replay; stopping leaves no thread of it running; what
    needs a server process (killing one) is refused by name."""
    before = set(threading.enumerate())
    with LocalCluster(shards=2, processes=False) as cluster:
        assert len(cluster.threads) == 3 and not cluster.shard_processes
        c = cluster.client()
        c.create_matrix("rowmat", *SHAPES["rowmat"], "float64")
        c.create_matrix("colmat", *SHAPES["colmat"], "float32", partition_by="cols")
        c.create_vector("vec", SHAPES["vec"][0], "int64", partitioner="cyclic")
        workers = [threading.Thread(target=apply, args=(cluster.client(), s, 40))
                   for s in (1, 2, 3)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        expected = {"rowmat": np.zeros(SHAPES["rowmat"]), "colmat": np.zeros(SHAPES["colmat"], "f4"),
                    "vec": np.zeros(SHAPES["vec"], np.int64)}
        for s in (1, 2, 3):
            replay(expected, s, 40)
        for name, want in expected.items():
            np.testing.assert_array_equal(c.pull_rows(name, "values", np.arange(want.shape[0])),
                                          want)
        assert c.status()["servers"] and all(s["alive"] for s in c.status()["servers"])
        with pytest.raises(ConfigError, match="kill_shard needs server processes"):
            cluster.kill_shard(0)
    wait_until(lambda: set(threading.enumerate()) <= before, timeout=10)
    with pytest.raises(ConfigError, match="processes=False"):
        LocalCluster(processes=False, env={"X": "1"})


def test_a_sync_client_is_driven_by_its_callers_from_threads_and_from_an_event_loop(cluster):
    """The sync Client runs its loop in the calling thread: eight threads pushing at once
    through one client all land, and a call made inside a running event loop (which the
    client must not block) is driven from a helper thread."""
    c = cluster.client()
    c.create_vector("driven", 64, "int64", exists_ok=True)
    start = c.pull_rows("driven", "values", np.arange(64))

    def pushes(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(25):
            c.push_rows("driven", "values", rng.integers(0, 64, 5), np.ones(5, np.int64))
    threads = [threading.Thread(target=pushes, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = c.pull_rows("driven", "values", np.arange(64))
    assert int((got - start).sum()) == 8 * 25 * 5

    async def inside_a_loop() -> np.ndarray:
        c.push_rows("driven", "values", [3], [7])
        return c.pull_rows("driven", "values", [3])
    assert asyncio.run(inside_a_loop())[0] == got[3] + 7
    c.destroy("driven")
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.pull_rows("driven", "values", [0])


def test_the_sync_client_declares_every_async_method_with_its_parameters():
    """Client's methods are declared (so type checkers and IDEs see them), one for each
    public AsyncClient coroutine, with the same parameters; tables come as handles."""
    import inspect

    from psframework import AsyncClient
    for name, method in inspect.getmembers(AsyncClient, inspect.iscoroutinefunction):
        if name.startswith("_") or name == "request":  # request: a single server's, async only
            continue
        assert name in vars(Client), f"Client does not declare {name}"
        want, got = inspect.signature(method), inspect.signature(vars(Client)[name])
        assert list(got.parameters.values()) == list(want.parameters.values()), name
        if name in ("create_matrix", "matrix", "create_vector", "vector"):
            assert want.return_annotation == "TableSpec"
            assert got.return_annotation == ("BigMatrix" if "matrix" in name else "BigVector")


def test_partitionings_agree_with_numpy(client):
    """Every split (rows/cols, range/cyclic, 1-3 parts) holds the same seeded values and
    routes pulls and pushes to the right place."""
    ref = None
    for by in ("rows", "cols"):
        for how in ("range", "cyclic"):
            for parts in (1, 2, 3):
                name = f"split-{by}-{how}-{parts}"
                m = client.create_matrix(name, 37, 11, "float64", partition_by=by,
                                         partitioner=how, parts=parts,
                                         init=init.uniform(-1, 1, seed=9))
                start = m.to_numpy()
                ref = start if ref is None else ref
                np.testing.assert_array_equal(start, ref)  # init is partition-invariant
                rows = np.array([36, 0, 5, 5, 17])
                m.push_rows(rows, np.arange(55.0).reshape(5, 11))
                expect = start.copy()
                np.add.at(expect, rows, np.arange(55.0).reshape(5, 11))
                np.testing.assert_array_equal(m.pull_rows([5, 36, 0, 17]), expect[[5, 36, 0, 17]])
                client.destroy(name)


def test_requests_larger_than_a_frame_are_split(fresh_cluster):
    """With a 256 KiB frame limit a 4 MiB pull and push still work, transparently."""
    cluster = fresh_cluster(2, max_frame_bytes=256 * 1024)
    from psframework import load_settings
    c = cluster.client(settings=load_settings(max_frame_bytes=256 * 1024))
    m = c.create_matrix("big", 4096, 256, "float32", init=init.normal(seed=1))
    whole = m.to_numpy()
    assert whole.shape == (4096, 256)
    rows = np.arange(4096)[::-1]
    m.push_rows(rows, np.ones((4096, 256), "f4"))
    np.testing.assert_array_equal(m.to_numpy(), whole + 1)
    stats = [c.run(c.aio.request(a, "stats")).args for a in c.model("big").servers.values()]
    assert sum(s["ops"]["push_rows"] for s in stats) > 8  # it really went in pieces
    # every byte of the matrix crossed the wire twice (pulled twice), and once pushed in
    assert sum(s["bytes_out"] for s in stats) >= 2 * whole.nbytes
    assert sum(s["bytes_in"] for s in stats) >= whole.nbytes


def test_serve_local_starts_and_stops_everything(cli):
    local = cli("serve", "local", "--shards", "2", "--port", "0")
    assert local.line.startswith("psframework cluster ready: master at 127.0.0.1:")
    address = local.line.split("master at ")[1].split()[0]
    with Client(address) as c:
        servers = wait_until(lambda: c.status()["servers"])
        pids = [s["pid"] for s in wait_until(
            lambda: [s for s in c.status()["servers"] if s["pid"]] if all(
                s["pid"] for s in c.status()["servers"]) else None)]
    assert len(servers) == 2
    local.popen.send_signal(2)  # Ctrl-C
    assert local.popen.wait(30) == 0
    for pid in pids:
        wait_until(lambda: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
