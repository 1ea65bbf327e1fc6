"""Pull/push throughput and latency of psframework, against a raw loopback socket.

Run (JSON on stdout, progress on stderr; about 25 s on 2 cores, under 15 s with --quick):

    python benchmarks/pullpush.py [--quick] [--shards 2] [--reps 10] > pullpush.json

What the numbers mean (GB = 1e9 bytes, every number measured in this one run):

- bulk_pull.raw_socket: a separate process sends the matrix's bytes over a plain TCP
  socket on 127.0.0.1; this process recv_into's a preallocated buffer. The ceiling.
- bulk_pull.rows / .cols: the whole float32 matrix (64 MiB by default) pulled with the
  synchronous Client (`pull_rows(all rows)`), partitioned by rows or by columns over the
  shards. `ratio_*` = psframework GB/s / raw GB/s. Raw and psframework repetitions are
  interleaved so machine noise hits both alike.
- small_pull: one row of 64 float32 (256 bytes) from a 10000 x 64 matrix, rows drawn at
  random, p50/p99 in µs over `small_pulls` requests after 100 warm-up rounds.
  `raw_socket_rtt_us`: a request/reply on the raw socket (8 bytes out, 256 back), one per
  round of the sync and of the async pulls below; `sync_client_us`: sequential pulls with
  the Client, a raw request and a pull in each round (taking turns at going first);
  `uvloop_echo_rtt_us` and `async_client_us`: in rounds of a raw request, a uvloop echo
  and a pull with an AsyncClient (in turn first): the echo is an asyncio Protocol
  server on uvloop in a child process that writes back what it reads, and an asyncio
  Protocol client on uvloop here that sends 256 bytes and awaits a future resolved in
  data_received (common.UvloopEcho, the floor of any asyncio request/reply).
  `pipelined_ops_per_s[W]`: single-row pulls from one AsyncClient with W in flight at
  once (asyncio.gather of W, then the next W); `raw_pipelined_ops_per_s[W]`: the raw
  socket with W requests at once (W 8-byte requests sent back to back, then the W
  256-byte replies read; the child answers them one by one, a recv and a send each).
  For each W the two alternate (half the requests raw, half psframework, twice).
- bulk_push: the whole matrix pushed with push_rows and the "add" aggregator, GB/s, rows
  and cols layouts and a raw-socket pull of the same bytes in every repetition
  (`raw_socket`, `ratio_*` = push GB/s / that raw GB/s). `finite_check_ms`: what refusing
  NaN/inf costs on those bytes — the client's check (psframework.client.checks.values)
  and the shard's (storage.aggregate.finite), each timed alone in this process — and
  `push_ms`, the median push of the same bytes (cols layout), beside them.
- startup: seconds to start a LocalCluster (a master and the shards, all registered),
  for the first create_model on it (fresh shards: kernels load from numba's cache),
  and to stop it.
- targets: the issue's ratios from this run, each {"value", "target", "met"}:
  `async_p50_over_raw_rtt` = small_pull async_client_us.p50 / raw_socket_rtt_us.p50
  (<= 5); `sync_over_async_p50` = sync_client_us.p50 / async_client_us.p50 (<= 1.3);
  `pipelined_best_ops_per_s` = the best of pipelined_ops_per_s (>= 50000);
  `bulk_pull_rows_ratio_median` / `_cols_` = bulk_pull.rows / .cols ratio_median (>= 0.8);
  `bulk_push_rows_over_raw` / `_cols_` = bulk_push.rows / .cols median_gbps / the median
  GB/s of the raw pulls interleaved with the pushes (bulk_push.raw_socket) (>= 0.8);
  `startup_total_s` = startup.total_s (<= 1.0).
- config.chunk_bytes / max_frame_bytes: bulk requests are split into requests of about
  chunk_bytes (never above max_frame_bytes), which matters for bulk numbers; loadavg_1m
  tells how busy the (shared) machine was.

benchmarks/request_path.py breaks one small request down into its stages.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time

import numpy as np

from common import UvloopEcho, arguments, log, machine
from psframework import AsyncClient, LocalCluster, init
from psframework.transport import run

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

    def pipelined(self, window: int, total: int, nbytes: int) -> float:
        """Ops/s of `total` requests of `nbytes` each, `window` at a time: the window's
        8-byte requests sent back to back, then all their replies read."""
        asks = REQUEST.pack(nbytes) * window
        buf = memoryview(bytearray(window * nbytes))
        t = time.perf_counter()
        for at in range(0, total, window):
            w = min(window, total - at)
            self.sock.sendall(asks[:w * REQUEST.size])
            got, need = 0, w * nbytes
            while got < need:
                got += self.sock.recv_into(buf[got:need])
        return total / (time.perf_counter() - t)

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
    pull, _ = beside_raw("pull", raw, buf, reps, lambda layout: client.pull_rows(
        f"bulk_{layout}", "values", everything))

    ones = np.ones((rows, cols), dtype=np.float32)
    for layout in ("rows", "cols"):  # warm-up: loads (or compiles) the kernels
        client.push_rows(f"bulk_{layout}", "values", everything, ones)
    push, times = beside_raw("push", raw, buf, reps, lambda layout: client.push_rows(
        f"bulk_{layout}", "values", everything, ones))
    push["finite_check_ms"] = finite_check_ms(ones, reps)
    push["finite_check_ms"]["push_ms"] = round(statistics.median(times["cols"]) * 1e3, 2)
    log(f"finite checks: {push['finite_check_ms']}")
    return pull, push


def beside_raw(what: str, raw: RawSocket, buf: memoryview, reps: int,
               transfer) -> tuple[dict, dict[str, list[float]]]:
    """`transfer(layout)` of the whole matrix for both layouts, each repetition beside a
    raw pull of the same bytes (so machine noise hits both alike): GB/s and the ratios,
    and the seconds of every repetition."""
    nbytes = buf.nbytes
    times: dict[str, list[float]] = {"raw": [], "rows": [], "cols": []}
    for i in range(reps):
        times["raw"].append(timed(lambda: raw.fetch(buf)))
        for layout in ("rows", "cols"):
            times[layout].append(timed(lambda: transfer(layout)))
        log(f"{what} rep {i + 1}/{reps}: " + ", ".join(
            f"{k} {nbytes / v[-1] / 1e9:.2f} GB/s" for k, v in times.items()))
    raw_rate = gbps(nbytes, times["raw"])
    return {"bytes": nbytes, "raw_socket": raw_rate,
            "rows": ratio(gbps(nbytes, times["rows"]), raw_rate),
            "cols": ratio(gbps(nbytes, times["cols"]), raw_rate)}, times


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


def rotated(steps: list, i: int) -> list:
    """`steps` starting at step i % len(steps): each step follows each other as often."""
    k = i % len(steps)
    return steps[k:] + steps[:k]


def rounds(steps: list, picks: np.ndarray, warmup: int = 100) -> dict[str, list[float]]:
    """Every (key, one) of `steps` called as one(pick) once per pick, each in turn first
    (so machine noise hits them alike), after `warmup` rounds of warm-up: the seconds of
    each call, per key."""
    lat: dict[str, list[float]] = {key: [] for key, _ in steps}
    for i, r in enumerate(itertools.chain(picks[:warmup], picks)):
        for key, one in rotated(steps, i):
            t = time.perf_counter()
            one(r)
            if i >= warmup:
                lat[key].append(time.perf_counter() - t)
    return lat


async def rounds_on_loop(steps: list, picks: np.ndarray, warmup: int = 100
                         ) -> dict[str, list[float]]:
    """`rounds` of coroutine functions, on the running loop."""
    lat: dict[str, list[float]] = {key: [] for key, _ in steps}
    for i, r in enumerate(itertools.chain(picks[:warmup], picks)):
        for key, one in rotated(steps, i):
            t = time.perf_counter()
            await one(r)
            if i >= warmup:
                lat[key].append(time.perf_counter() - t)
    return lat


def small(cluster, client, raw: RawSocket, echo: UvloopEcho, n: int, rows: int, cols: int,
          pipelined_total: int) -> dict:
    client.create_matrix("small", rows, cols, init=init.normal(seed=2), exists_ok=True)
    picks = np.random.default_rng(0).integers(0, rows, n)
    buf = memoryview(bytearray(cols * 4))
    out: dict = {"row_bytes": cols * 4}
    # Every round one raw request and one pull, in turn first: noise hits both alike.
    lat = rounds([("raw", lambda r: raw.fetch(buf)),
                  ("sync", lambda r: client.pull_rows("small", "values", [r]))], picks)

    async def on_loop() -> None:
        await echo.connect()
        async with AsyncClient(cluster.address) as c:
            async def raw_rtt(r) -> None:
                raw.fetch(buf)  # blocking: nothing else runs on this loop meanwhile

            async def pull(r) -> None:
                await c.pull_rows("small", "values", [r])
            looped = await rounds_on_loop(
                [("raw", raw_rtt), ("echo", lambda r: echo.trip()), ("async", pull)], picks)
            out["raw_socket_rtt_us"] = percentiles(lat["raw"] + looped["raw"])
            out["uvloop_echo_rtt_us"] = percentiles(looped["echo"])
            out["sync_client_us"] = percentiles(lat["sync"])
            out["async_client_us"] = percentiles(looped["async"])
            out["pipelined_ops_per_s"] = {}
            out["raw_pipelined_ops_per_s"] = {}
            many = np.random.default_rng(1).integers(0, rows, pipelined_total)
            half = many.size // 2
            for window in (1, 16, 64, 256):
                secs = {"raw": 0.0, "ours": 0.0}
                for part in (many[:half], many[half:]):  # raw, ours, raw, ours
                    secs["raw"] += part.size / raw.pipelined(window, part.size, cols * 4)
                    t = time.perf_counter()
                    for at in range(0, part.size, window):
                        await asyncio.gather(*(c.pull_rows("small", "values", [r])
                                               for r in part[at:at + window]))
                    secs["ours"] += time.perf_counter() - t
                out["pipelined_ops_per_s"][window] = round(many.size / secs["ours"])
                out["raw_pipelined_ops_per_s"][window] = round(many.size / secs["raw"])
                log(f"pipelined window {window}: {out['pipelined_ops_per_s'][window]} ops/s "
                    f"(raw {out['raw_pipelined_ops_per_s'][window]})")
        await echo.disconnect()

    run(on_loop())
    log(f"small pulls: {out}")
    return out


def target(value: float, op: str, bound: float) -> dict:
    met = value <= bound if op == "<=" else value >= bound
    return {"value": round(value, 3), "target": f"{op} {bound:g}", "met": bool(met)}


def targets(pull: dict, push: dict, small_pull: dict, started_up: dict) -> dict:
    """The issue's ratios, from this run's numbers."""
    raw_gbps = push["raw_socket"]["median_gbps"]  # the raw pulls interleaved with the pushes
    return {
        "async_p50_over_raw_rtt": target(small_pull["async_client_us"]["p50"]
                                         / small_pull["raw_socket_rtt_us"]["p50"], "<=", 5),
        "sync_over_async_p50": target(small_pull["sync_client_us"]["p50"]
                                      / small_pull["async_client_us"]["p50"], "<=", 1.3),
        "pipelined_best_ops_per_s": target(max(small_pull["pipelined_ops_per_s"].values()),
                                           ">=", 50_000),
        "bulk_pull_rows_ratio_median": target(pull["rows"]["ratio_median"], ">=", 0.8),
        "bulk_pull_cols_ratio_median": target(pull["cols"]["ratio_median"], ">=", 0.8),
        "bulk_push_rows_over_raw": target(push["rows"]["median_gbps"] / raw_gbps, ">=", 0.8),
        "bulk_push_cols_over_raw": target(push["cols"]["median_gbps"] / raw_gbps, ">=", 0.8),
        "startup_total_s": target(started_up["total_s"], "<=", 1.0),
    }


def main() -> None:
    a = arguments(__doc__, "small sizes, for a smoke test (< 30 s)",
                  "repetitions of each bulk transfer "
                   "(default 10, or 3 with --quick)")
    reps = a.reps or (3 if a.quick else 10)
    rows, cols = (2048, 1024) if a.quick else (16384, 1024)
    n_small, pipelined_total = (300, 2048) if a.quick else (2000, 20480)

    started = time.perf_counter()
    raw = RawSocket()
    echo = UvloopEcho(256)
    log(f"starting a LocalCluster with {a.shards} shards")
    try:
        with LocalCluster(shards=a.shards) as cluster:
            client = cluster.client()
            max_frame = client.aio.settings.max_frame_bytes  # bulk requests are split below it
            chunk = client.aio.settings.chunk_bytes
            pull, push = bulk(client, raw, rows, cols, reps)
            small_pull = small(cluster, client, raw, echo, n_small, 10_000, 64, pipelined_total)
    finally:
        raw.close()
        echo.close()
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
        "targets": targets(pull, push, small_pull, started_up),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
