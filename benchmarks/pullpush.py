"""Pull/push throughput and latency of psframework, against a raw loopback socket.

Run (JSON on stdout, progress on stderr; about 15 s on 2 cores, under 10 s with --quick):

    python benchmarks/pullpush.py [--quick] [--shards 2] [--reps 10] > pullpush.json

What the numbers mean (GB = 1e9 bytes, every number measured in this one run):

- bulk_pull.raw_socket: a separate process sends the matrix's bytes over a plain TCP
  socket on 127.0.0.1; this process recv_into's a preallocated buffer. The ceiling.
- bulk_pull.rows / .cols: the whole float32 matrix (64 MiB by default) pulled with the
  synchronous Client (`pull_rows(all rows)`), partitioned by rows or by columns over the
  shards. `ratio_*` = psframework GB/s / raw GB/s (target >= 0.5). Raw and psframework
  repetitions are interleaved so machine noise hits both alike.
- small_pull: one row of 64 float32 from a matrix. `raw_socket_rtt_us` is a 256-byte
  request/reply on the raw socket; `sync_client_us` / `async_client_us` are p50/p99 of
  sequential pulls with the Client / an AsyncClient; `pipelined_ops_per_s[W]` are
  single-row pulls from one AsyncClient with W in flight at once (asyncio.gather).
- bulk_push: the whole matrix pushed with push_rows and the "add" aggregator, GB/s.
  `finite_check_ms`: what refusing NaN/inf costs on those bytes — the client's check
  (psframework.client.checks.values) and the shard's (storage.aggregate.finite), each
  timed alone in this process — and `push_ms`, one push of the same bytes, beside them.
- startup: seconds to start a LocalCluster (a master and the shards, all registered),
  for the first create_model on it (fresh shards: kernels load from numba's cache),
  and to stop it.
- config.chunk_bytes / max_frame_bytes: bulk requests are split into requests of about
  chunk_bytes (never above max_frame_bytes), which matters for bulk numbers; loadavg_1m tells how busy the (shared) machine was.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time

import numpy as np

from common import arguments, log, machine
from psframework import AsyncClient, LocalCluster, init
from psframework import run

REQUEST = struct.Struct("<Q")  # raw protocol: the client asks for n bytes, the server sends them


# -- raw socket baseline --------------------------------------------------------------------
def _raw_server(port_pipe) -> None:
    """Child process: send back as many bytes as each 8-byte request asks for."""
    srv = socket.create_server(("127.0.0.1", 0))
    port_pipe.send(srv.getsockname()[1])
    sock, _ = srv.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = memoryview(bytearray(0))
    while True:
        head = sock.recv(REQUEST.size, socket.MSG_WAITALL)
        if len(head) < REQUEST.size:
            return
        (n,) = REQUEST.unpack(head)
        if n > payload.nbytes:
            payload = memoryview(bytearray(os.urandom(1) * n))
        sock.sendall(payload[:n])


class RawSocket:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")  # no fork: this process runs client threads
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_raw_server, args=(child,), daemon=True)
        self.proc.start()
        self.sock = socket.create_connection(("127.0.0.1", parent.recv()))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def fetch(self, buf: memoryview) -> None:
        self.sock.sendall(REQUEST.pack(buf.nbytes))
        got = 0
        while got < buf.nbytes:
            got += self.sock.recv_into(buf[got:])

    def close(self) -> None:
        self.sock.close()
        self.proc.join(5)


# -- helpers --------------------------------------------------------------------------------
def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gbps(nbytes: int, seconds: list[float]) -> dict:
    rates = [nbytes / s / 1e9 for s in seconds]
    return {"best_gbps": round(max(rates), 3), "median_gbps": round(statistics.median(rates), 3)}


def ratio(ours: dict, raw: dict) -> dict:
    return {**ours, "ratio_best": round(ours["best_gbps"] / raw["best_gbps"], 3),
            "ratio_median": round(ours["median_gbps"] / raw["median_gbps"], 3)}


def percentiles(seconds: list[float]) -> dict:
    us = np.asarray(seconds) * 1e6
    return {"p50": round(float(np.percentile(us, 50)), 1),
            "p99": round(float(np.percentile(us, 99)), 1)}


# -- benchmarks -----------------------------------------------------------------------------
def bulk(client, raw: RawSocket, rows: int, cols: int, reps: int) -> tuple[dict, dict]:
    nbytes = rows * cols * 4
    everything = np.arange(rows)
    for layout in ("rows", "cols"):
        client.create_matrix(f"bulk_{layout}", rows, cols, partition_by=layout,
                             init=init.uniform(seed=1), exists_ok=True)
    # Warm up (connections, page faults) and check both layouts return the same matrix.
    same = client.pull_rows("bulk_rows", "values", everything)
    if not np.array_equal(same, client.pull_rows("bulk_cols", "values", everything)):
        raise SystemExit("row- and column-partitioned pulls disagree")
    buf = memoryview(bytearray(nbytes))
    raw.fetch(buf)
    times: dict[str, list[float]] = {"raw": [], "rows": [], "cols": []}
    for i in range(reps):
        times["raw"].append(timed(lambda: raw.fetch(buf)))
        for layout in ("rows", "cols"):
            times[layout].append(timed(lambda: client.pull_rows(f"bulk_{layout}", "values",
                                                                 everything)))
        log(f"pull rep {i + 1}/{reps}: " + ", ".join(
            f"{k} {nbytes / v[-1] / 1e9:.2f} GB/s" for k, v in times.items()))
    raw_rate = gbps(nbytes, times["raw"])
    pull = {"bytes": nbytes, "raw_socket": raw_rate,
            "rows": ratio(gbps(nbytes, times["rows"]), raw_rate),
            "cols": ratio(gbps(nbytes, times["cols"]), raw_rate)}

    ones = np.ones((rows, cols), dtype=np.float32)
    push = {"bytes": nbytes}
    for layout in ("rows", "cols"):
        name = f"bulk_{layout}"
        client.push_rows(name, "values", everything, ones)  # warm-up: compiles the kernels
        secs = [timed(lambda: client.push_rows(name, "values", everything, ones))
                for _ in range(reps)]
        push[layout] = gbps(nbytes, secs)
        log(f"push {layout}: {push[layout]}")
    push["finite_check_ms"] = finite_check_ms(ones, reps)
    push["finite_check_ms"]["push_ms"] = round(statistics.median(secs) * 1e3, 2)
    log(f"finite checks: {push['finite_check_ms']}")
    return pull, push


def finite_check_ms(values: np.ndarray, reps: int) -> dict:
    """Median ms of the client's and the shard's NaN/inf checks over `values`."""
    from psframework.client import checks
    from psframework.storage import TableSpec
    from psframework.storage.aggregate import finite
    spec = TableSpec("values", values.shape, str(values.dtype))
    client_check = lambda: checks.values(values, spec, values.shape)
    finite(values)  # compiled (or loaded) before it is timed
    return {"client": round(statistics.median(timed(client_check) for _ in range(reps)) * 1e3, 2),
            "shard": round(statistics.median(timed(lambda: finite(values))
                                             for _ in range(reps)) * 1e3, 2)}


def startup(shards: int, reps: int) -> dict:
    """Median seconds to start a LocalCluster, create its first model, and stop it."""
    times: dict[str, list[float]] = {"start_s": [], "first_create_s": [], "stop_s": []}
    for _ in range(reps):
        t = time.perf_counter()
        cluster = LocalCluster(shards=shards).start()
        times["start_s"].append(time.perf_counter() - t)
        client = cluster.client()
        times["first_create_s"].append(timed(lambda: client.create_matrix("first", 1000, 64)))
        times["stop_s"].append(timed(cluster.stop))
    out = {k: round(statistics.median(v), 3) for k, v in times.items()}
    out["total_s"] = round(sum(out.values()), 3)
    log(f"startup: {out}")
    return out


def small(cluster, client, raw: RawSocket, n: int, rows: int, cols: int,
          pipelined_total: int) -> dict:
    client.create_matrix("small", rows, cols, init=init.normal(seed=2), exists_ok=True)
    picks = np.random.default_rng(0).integers(0, rows, n)
    buf = memoryview(bytearray(cols * 4))
    out: dict = {"row_bytes": cols * 4}
    for key, one in (("raw_socket_rtt_us", lambda r: raw.fetch(buf)),
                     ("sync_client_us", lambda r: client.pull_rows("small", "values", [r]))):
        for r in picks[:100]:
            one(r)
        out[key] = percentiles([timed(lambda: one(r)) for r in picks])

    async def on_loop() -> None:
        async with AsyncClient(cluster.address) as c:
            for r in picks[:100]:
                await c.pull_rows("small", "values", [r])
            lat = []
            for r in picks:
                t = time.perf_counter()
                await c.pull_rows("small", "values", [r])
                lat.append(time.perf_counter() - t)
            out["async_client_us"] = percentiles(lat)
            out["pipelined_ops_per_s"] = {}
            many = np.random.default_rng(1).integers(0, rows, pipelined_total)
            for window in (1, 16, 64, 256):
                t = time.perf_counter()
                for at in range(0, many.size, window):
                    await asyncio.gather(*(c.pull_rows("small", "values", [r])
                                           for r in many[at:at + window]))
                out["pipelined_ops_per_s"][window] = round(many.size / (time.perf_counter() - t))
                log(f"pipelined window {window}: {out['pipelined_ops_per_s'][window]} ops/s")

    run(on_loop())
    log(f"small pulls: {out}")
    return out


def main() -> None:
    a = arguments(__doc__, "small sizes, for a smoke test (< 30 s)",
                  "repetitions of each bulk transfer "
                   "(default 10, or 3 with --quick)")
    reps = a.reps or (3 if a.quick else 10)
    rows, cols = (2048, 1024) if a.quick else (16384, 1024)
    n_small, pipelined_total = (300, 2048) if a.quick else (2000, 20480)

    started = time.perf_counter()
    raw = RawSocket()
    log(f"starting a LocalCluster with {a.shards} shards")
    with LocalCluster(shards=a.shards) as cluster:
        client = cluster.client()
        max_frame = client.aio.settings.max_frame_bytes  # bulk requests are split below it
        chunk = client.aio.settings.chunk_bytes
        pull, push = bulk(client, raw, rows, cols, reps)
        small_pull = small(cluster, client, raw, n_small, 10_000, 64, pipelined_total)
    raw.close()
    started_up = startup(a.shards, 3)
    result = {
        "benchmark": "pullpush",
        "machine": machine(),
        "config": {"quick": a.quick, "shards": a.shards, "reps": reps,
                   "bulk_shape": [rows, cols], "dtype": "float32", "small_pulls": n_small,
                   "pipelined_pulls": pipelined_total,
                   "max_frame_bytes": max_frame, "chunk_bytes": chunk},
        "bulk_pull": pull,
        "small_pull": small_pull,
        "bulk_push": push,
        "startup": started_up,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
