"""Failure detection, failover, replication's cost and checkpoints, on real processes.

Run (JSON on stdout, progress on stderr; about 2 minutes on 2 cores, well under one with
--quick):

    python benchmarks/failover.py [--quick] [--reps 3] > failover.json

What the numbers mean (every one measured in this run, default settings unless said):

- detect_s: from a shard's death to the master's status calling it dead (polled every
  5 ms). `kill9`: SIGKILL, which the master notices when its connection to the shard
  drops and the shard's port refuses; `stopped`: SIGSTOP, a shard that is there but
  silent (its port still accepts), so only the heartbeat timeout (1.5 s) finds it.
- false_deaths: a 3-shard cluster with replicas=2 while 4 busy processes compete for
  the cores and a client pushes, for 20 s (5 with --quick): shards declared dead and
  partitions failed over (0 expected: heartbeats come from their own thread).
- recover_s: from a kill -9 of the primary of partition 0 to the end of the first push
  to partition 0 sent right after it (it waits through detection and failover):
  `promote` with replicas=2 (the backup takes over), `restore` with replicas=1 (a live
  shard loads the partition from the last checkpoint).
- lost_pushes: two threads push +1 increments through a kill -9 of a primary; the final
  state against the count of acknowledged pushes. replicas=2: 0 expected. replicas=1 with
  a checkpoint taken once before the pushes: what the dead partition received after it.
- push: one client, 64 rows × 16 float32 per push to a row-partitioned matrix on 3
  shards. `latency_us` p50/p99 of sequential pushes; `ops_per_s` with 16 in flight
  (AsyncClient); for replicas 1 and 2, interleaved rep by rep, and their ratios.
- rebuild: a one-partition float32 model (256 MiB; 16 MiB with --quick) with replicas=2
  while one client pushes 64 rows at a time: its backup is killed, and `seconds` runs
  until the master lists the new backup (detection, the copy, the writes held meanwhile);
  push latency before, and p50 / max during the rebuild (writes are held only for the
  partition's memory copy).
- checkpoint: a float32 model of `model_bytes` (1 GiB; 64 MiB with --quick, random
  values) on 2 shards, in `parts` partitions: `seconds` for the whole checkpoint (copy +
  write + fsync + publish), `pause_ms` the longest time one partition's writes were held
  (the copy into memory allocated beforehand).
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

from common import arguments, log, machine
from psframework import AsyncClient, LocalCluster, init, load_settings, run

PATIENT = load_settings(retry_deadline=60.0, request_timeout=120.0)


def shard_index(cluster: LocalCluster, client, model: str, part: int) -> int:
    status = client.status()
    name = next(m for m in status["models"] if m["name"] == model)["placement"][part]
    pid = next(s["pid"] for s in status["servers"] if s["name"] == name)
    return next(i for i, p in enumerate(cluster.shard_processes) if p.pid == pid)


def wait_dead(client, name: str, started: float) -> float:
    while True:
        if any(s["name"] == name and not s["alive"] for s in client.status()["servers"]):
            return time.perf_counter() - started
        time.sleep(0.005)


def detect(kind: str) -> float:
    with LocalCluster(3) as cluster:
        c = cluster.client()
        c.create_vector("v", 30)
        victim = shard_index(cluster, c, "v", 0)
        name = c.model("v").placement[0]
        proc = cluster.shard_processes[victim]
        started = time.perf_counter()
        proc.send_signal(signal.SIGKILL if kind == "kill9" else signal.SIGSTOP)
        try:
            return wait_dead(c, name, started)
        finally:
            if kind != "kill9":
                proc.send_signal(signal.SIGCONT)


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def false_deaths(seconds: float, burners: int) -> dict:
    """Shards declared dead while `burners` busy processes compete with a cluster for
    the cores and a client pushes — none is, and none should be."""
    import multiprocessing as mp
    with LocalCluster(3, replicas=2) as cluster:
        c = cluster.client(settings=PATIENT)
        m = c.create_matrix("m", 10_000, 16, "float32")
        procs = [mp.Process(target=_burn, args=(seconds,)) for _ in range(burners)]
        for p in procs:
            p.start()
        end, pushes, seen_dead = time.perf_counter() + seconds, 0, set()
        values = np.ones((64, 16), np.float32)
        rng = np.random.default_rng(0)
        while time.perf_counter() < end:
            m.push_rows(rng.integers(0, 10_000, 64), values)
            pushes += 1
            if pushes % 50 == 0:
                seen_dead |= {s["name"] for s in c.status()["servers"] if not s["alive"]}
        for p in procs:
            p.join()
        recoveries = c.status()["models"][0]["recoveries"]
    return {"seconds": seconds, "busy_processes": burners, "pushes": pushes,
            "declared_dead": len(seen_dead), "recoveries": recoveries}


def recover(replicas: int) -> float:
    with tempfile.TemporaryDirectory() as ckpt, \
            LocalCluster(3, replicas=replicas, checkpoint_dir=ckpt) as cluster:
        c = cluster.client(settings=PATIENT)
        m = c.create_vector("v", 30, "int64")
        m.push([0], [1])
        c.checkpoint("v")
        victim = shard_index(cluster, c, "v", 0)
        started = time.perf_counter()
        cluster.kill_shard(victim)
        m.push([0], [1])  # row 0 is partition 0's
        return time.perf_counter() - started


def lost_pushes(replicas: int, n: int) -> dict:
    with tempfile.TemporaryDirectory() as ckpt, \
            LocalCluster(3, replicas=replicas, checkpoint_dir=ckpt) as cluster:
        c = cluster.client(settings=PATIENT)
        m = c.create_vector("v", 300, "int64")
        c.checkpoint("v")
        acked = np.zeros(300, np.int64)
        lock = threading.Lock()

        def writer(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for _ in range(n):
                rows = np.unique(rng.integers(0, 300, 8))
                m.push(rows, np.ones(rows.size, np.int64))
                with lock:
                    acked[rows] += 1
        threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        cluster.kill_shard(shard_index(cluster, c, "v", 0))
        for t in threads:
            t.join()
        got = m.to_numpy()
        return {"acknowledged_increments": int(acked.sum()),
                "lost_increments": int((acked - got).sum()),
                "recoveries": c.status()["models"][0]["recoveries"]}


async def push_numbers(address: str, model: str, seconds: float, n_latency: int) -> dict:
    async with AsyncClient(address) as c:
        rng = np.random.default_rng(0)
        values = np.ones((64, 16), np.float32)
        lat = []
        for _ in range(n_latency):
            rows = rng.integers(0, 10_000, 64)
            t = time.perf_counter()
            await c.push_rows(model, "values", rows, values)
            lat.append(time.perf_counter() - t)
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await c.push_rows(model, "values", rng.integers(0, 10_000, 64), values)
                done += 1
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        return {"p50_us": np.percentile(lat, 50) * 1e6, "p99_us": np.percentile(lat, 99) * 1e6,
                "ops_per_s": done / (time.perf_counter() - started)}


def push_cost(reps: int, seconds: float, n_latency: int) -> dict:
    with LocalCluster(3) as cluster:
        c = cluster.client()
        for r in (1, 2):
            c.create_matrix(f"r{r}", 10_000, 16, "float32", replicas=r)
        out: dict[int, list] = {1: [], 2: []}
        for _ in range(reps):
            for r in (1, 2):
                out[r].append(run(push_numbers(cluster.address, f"r{r}", seconds, n_latency)))
    med = {r: {k: statistics.median(x[k] for x in out[r]) for k in out[r][0]} for r in out}
    return {"replicas_1": med[1], "replicas_2": med[2],
            "latency_p50_ratio_2_over_1": med[2]["p50_us"] / med[1]["p50_us"],
            "throughput_ratio_2_over_1": med[2]["ops_per_s"] / med[1]["ops_per_s"]}


def rebuild(model_bytes: int) -> dict:
    """Kill the backup of a one-partition model while a client pushes to it: how long the
    new backup takes to build, and the push latency meanwhile against before."""
    cols = 64
    rows = model_bytes // (4 * cols)
    with LocalCluster(3, replicas=2) as cluster:
        c = cluster.client(settings=PATIENT)
        c.create_matrix("big", rows, cols, "float32", parts=1, init=init.uniform(-1, 1, seed=0))
        backup = c.status()["models"][0]["backups"][0][0]
        pid = next(s["pid"] for s in c.status()["servers"] if s["name"] == backup)
        victim = next(i for i, p in enumerate(cluster.shard_processes) if p.pid == pid)
        times: list[tuple[float, float]] = []
        stop = threading.Event()

        def pushing() -> None:
            rng = np.random.default_rng(0)
            values = np.ones((64, cols), np.float32)
            while not stop.is_set():
                t = time.perf_counter()
                c.push_rows("big", "values", rng.integers(0, rows, 64), values)
                times.append((t, time.perf_counter() - t))
        thread = threading.Thread(target=pushing)
        thread.start()
        time.sleep(1.0)
        killed = time.perf_counter()
        cluster.kill_shard(victim)
        while True:
            m = c.status()["models"][0]
            if m["backups"][0] and m["backups"][0] != [backup]:
                break
            time.sleep(0.01)
        built = time.perf_counter()
        stop.set()
        thread.join()
    before = [d for t, d in times if t < killed]
    during = [d for t, d in times if killed <= t < built]
    return {"partition_bytes": rows * cols * 4, "seconds": built - killed,
            "push_p50_ms_before": np.percentile(before, 50) * 1e3,
            "push_p99_ms_before": np.percentile(before, 99) * 1e3,
            "push_p50_ms_during": np.percentile(during, 50) * 1e3 if during else None,
            "push_max_ms_during": max(during) * 1e3 if during else None,
            "pushes_during": len(during)}


def checkpoint_cost(model_bytes: int, parts: int) -> dict:
    cols = 1024
    rows = model_bytes // (4 * cols)
    with tempfile.TemporaryDirectory() as ckpt, \
            LocalCluster(2, checkpoint_dir=ckpt) as cluster:
        c = cluster.client(settings=PATIENT)
        c.create_matrix("big", rows, cols, "float32", parts=parts,  # every page written
                        init=init.uniform(-1, 1, seed=0))
        started = time.perf_counter()
        done = c.checkpoint("big")
        return {"model_bytes": rows * cols * 4, "parts": parts,
                "seconds": time.perf_counter() - started, "pause_ms": done["pause"] * 1e3}


def main() -> None:
    args = arguments(__doc__, "a smaller model and fewer repetitions (for CI)",
                     "repetitions of each measurement (default 3; 1 with --quick)")
    reps = args.reps or (1 if args.quick else 3)
    model_bytes = (64 << 20) if args.quick else (1 << 30)
    result = {"machine": machine(), "reps": reps}
    log("detection ...")
    result["detect_s"] = {k: statistics.median(detect(k) for _ in range(reps))
                          for k in ("kill9", "stopped")}
    log("false deaths under load ...")
    result["false_deaths"] = false_deaths(5.0 if args.quick else 20.0, 4)
    log("recovery ...")
    result["recover_s"] = {"promote": statistics.median(recover(2) for _ in range(reps)),
                           "restore": statistics.median(recover(1) for _ in range(reps))}
    log("lost pushes ...")
    n = 100 if args.quick else 400
    result["lost_pushes"] = {"replicas_2": lost_pushes(2, n), "replicas_1": lost_pushes(1, n)}
    log("push cost of replication ...")
    result["push"] = push_cost(reps, 0.5 if args.quick else 2.0, 200 if args.quick else 1000)
    log("a backup rebuilt under pushes ...")
    result["rebuild"] = rebuild(model_bytes // 4)
    log("checkpoints ...")
    result["checkpoint"] = [checkpoint_cost(model_bytes, p) for p in (2, 16)]
    json.dump(result, sys.stdout, indent=2, default=float)
    print()


if __name__ == "__main__":
    main()
