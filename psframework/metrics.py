"""What a master or a shard measures of itself, and its Prometheus endpoint.

A request pays little: `RequestTimes.timed` counts it by op and, when it is answered,
adds its latency to that op's histogram — plain Python numbers (a dict lookup, a bisect,
a few additions), no lock, because every request of a server is handled on its event
loop. Nothing becomes a Prometheus object on that path.

A scrape of `MetricsEndpoint` (prometheus_client's HTTP server, on a thread of its own,
with a registry of its own — several servers may share a process) asks the server's
event loop for a snapshot, so it sees one consistent moment and never reads a dict the
loop is changing, and turns that snapshot into metric families (`families`). The names,
types and labels are listed in docs/metrics.md; `psframework status` shows the same
numbers (`summary`, made from the same histograms).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import os
import threading
import time
from collections import deque
from typing import Any, Awaitable, Callable, Container, Iterator

from psframework.errors import ConfigError

__all__ = ["BOUNDS", "UNKNOWN_OP", "RequestTimes", "MetricsEndpoint", "families",
           "resident_bytes"]

log = logging.getLogger("psframework.metrics")

#: Upper bounds (seconds) of the latency histograms' buckets; the last bucket is +Inf.
BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The op label of requests for ops the server does not know (peers cannot add labels).
UNKNOWN_OP = "(unknown)"
#: Rates and recent latencies in `summary` cover about this many seconds.
RECENT = 10.0
TICK = 0.5  # seconds between the snapshots `summary` keeps for that
SCRAPE_TIMEOUT = 5.0  # seconds a scrape waits for a busy event loop before the last snapshot


class _Histogram:
    __slots__ = ("count", "total", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(BOUNDS) + 1)  # not cumulative; the last is +Inf


class RequestTimes:
    """Requests received and the latency of those answered, by op: `arrivals` counts a
    request when it comes in, its histogram when its reply is ready (for a request that
    runs on, later). Every method runs on the server's event loop."""

    def __init__(self) -> None:
        self.arrivals: dict[str, int] = {}
        self.latency: dict[str, _Histogram] = {}
        self._recent: deque[tuple[float, dict[str, tuple[int, float, tuple[int, ...]]]]] = deque()

    def timed(self, handler: Callable, known: Container[str]) -> Callable:
        """`handler` (a server's request handler), counted and timed by op; ops not in
        `known` count as UNKNOWN_OP."""
        arrivals, latency, observe = self.arrivals, self.latency, self.observe
        clock, bucket = time.perf_counter, bisect.bisect_left

        def handle(msg):
            op = msg.op if msg.op in known else UNKNOWN_OP
            arrivals[op] = arrivals.get(op, 0) + 1
            started = clock()
            try:
                result = handler(msg)
            except BaseException:
                observe(op, clock() - started)
                raise
            if isinstance(result, tuple):  # answered already: the common case, inlined
                seconds = clock() - started
                h = latency.get(op)
                if h is None:
                    h = latency[op] = _Histogram()
                h.count += 1
                h.total += seconds
                h.buckets[bucket(BOUNDS, seconds)] += 1
                return result
            if isinstance(result, asyncio.Future):
                result.add_done_callback(lambda _: observe(op, clock() - started))
                return result
            return self._awaited(op, started, result)
        return handle

    async def _awaited(self, op: str, started: float, result: Awaitable) -> Any:
        try:
            return await result
        finally:
            self.observe(op, time.perf_counter() - started)

    def observe(self, op: str, seconds: float) -> None:
        h = self.latency.get(op)
        if h is None:
            h = self.latency[op] = _Histogram()
        h.count += 1
        h.total += seconds
        h.buckets[bisect.bisect_left(BOUNDS, seconds)] += 1

    def histograms(self) -> dict[str, dict]:
        """{op: {count, sum, buckets (per bucket, not cumulative; the last is +Inf)}}."""
        return {op: {"count": h.count, "sum": h.total, "buckets": list(h.buckets)}
                for op, h in self.latency.items()}

    def _tick(self, now: float) -> None:
        """Keep the histograms as of now (at most every TICK seconds) for later
        summaries; of the ones older than RECENT seconds only the newest stays."""
        if self._recent and now - self._recent[-1][0] < TICK:
            return
        self._recent.append((now, {op: (h.count, h.total, tuple(h.buckets))
                                   for op, h in self.latency.items()}))
        while len(self._recent) > 1 and self._recent[1][0] <= now - RECENT:
            self._recent.popleft()

    def summary(self) -> dict[str, dict]:
        """Per op: requests answered (`count`), and their rate per second, mean latency
        and the bucket bounds holding the median and the 99th percentile (`p99` None:
        beyond the last bound; latencies None: no request) over a recent span: since the
        newest summary at least RECENT seconds old — about the last RECENT seconds on a
        shard, which sums up at every heartbeat — or since the first one."""
        now = time.monotonic()
        since, before = self._recent[0] if self._recent else (now, {})
        self._tick(now)
        span = now - since
        out = {}
        for op, h in self.latency.items():
            count0, total0, buckets0 = before.get(op, (0, 0.0, None))
            n = h.count - count0
            recent = h.buckets if buckets0 is None else [a - b for a, b in zip(h.buckets, buckets0)]
            out[op] = {"count": h.count, "rate": round(n / span, 3) if span > 0 else 0.0,
                       "mean": (h.total - total0) / n if n else None,
                       "p50": _quantile(recent, n, 0.5) if n else None,
                       "p99": _quantile(recent, n, 0.99) if n else None}
        return out


def _quantile(buckets: list[int], n: int, q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (None: the +Inf bucket)."""
    rank, seen = q * n, 0
    for bound, c in zip(BOUNDS, buckets):
        seen += c
        if seen >= rank:
            return bound
    return None


def resident_bytes() -> int | None:
    """This process's resident memory (Linux: /proc/self/statm), None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


# -- Prometheus --------------------------------------------------------------------------
class MetricsEndpoint:
    """A Prometheus endpoint for one server: its own registry, served over HTTP by
    prometheus_client on a thread; each scrape takes `snapshot()` on `loop`."""

    def __init__(self, role: str, snapshot: Callable[[], dict],
                 loop: asyncio.AbstractEventLoop) -> None:
        from prometheus_client.registry import CollectorRegistry  # only when metrics are on
        self.role = role
        self._snapshot = snapshot
        self._loop = loop
        self._last: dict | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._httpd: Any = None  # prometheus_client's WSGI server, while serving
        self.address = ""

    def start(self, host: str, port: int) -> str:
        """Listen on host:port (0: any free port); returns the address bound."""
        from prometheus_client import start_http_server
        try:
            httpd, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"the {self.role} cannot serve metrics on {host}:{port} "
                              f"({e.strerror or e}); is that port taken? pick another "
                              "--metrics-port (PSF_METRICS_PORT), or 0 for any free one") from None
        self._httpd = httpd
        bound = httpd.server_address[1]
        self.address = f"{'[' + host + ']' if ':' in host else host}:{bound}"
        log.info("%s metrics on http://%s/metrics", self.role, self.address)
        return self.address

    def close(self) -> None:
        """Stop serving. prometheus_client's server notices within half a second: it is
        told from a thread of its own, so a server's stop never waits for it."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            threading.Thread(target=lambda: (httpd.shutdown(), httpd.server_close()),
                             name="psframework-metrics-stop", daemon=True).start()

    def collect(self) -> Iterator:
        snap = self._take()
        if snap is not None:
            yield from families(self.role, snap)

    def _take(self) -> dict | None:
        done: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:
            try:
                done.set_result(self._snapshot())
            except BaseException as e:  # noqa: BLE001 - handed to the scraping thread
                done.set_exception(e)
        try:
            self._loop.call_soon_threadsafe(take)
            self._last = done.result(SCRAPE_TIMEOUT)
        except RuntimeError:  # the loop is closed: the server has stopped
            return None
        except concurrent.futures.TimeoutError:
            log.warning("%s metrics: the event loop did not answer within %gs; serving the "
                        "previous snapshot", self.role, SCRAPE_TIMEOUT)
        return self._last


def families(role: str, snap: dict) -> Iterator:
    """The metric families of one server's snapshot (its `stats`, plus `latency`: the
    RequestTimes histograms). See docs/metrics.md for every name."""
    from prometheus_client.core import (
        CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily,
    )
    from prometheus_client.utils import floatToGoString

    from psframework import __version__

    info = InfoMetricFamily("psframework_server", "This server: its role, name and address.")
    info.add_metric([], {"role": role, "name": str(snap.get("name", role)),
                         "address": str(snap.get("address", "")), "version": __version__})
    yield info

    requests = CounterMetricFamily("psframework_requests", "Requests received, by op.",
                                   labels=["op"])
    for op, n in sorted(snap.get("ops", {}).items()):
        requests.add_metric([op], n)
    yield requests

    latency = HistogramMetricFamily("psframework_request_duration_seconds", "Time from a "
                                    "request's arrival to its reply, by op.", labels=["op"])
    bounds = [floatToGoString(b) for b in BOUNDS] + ["+Inf"]
    for op, h in sorted(snap.get("latency", {}).items()):
        cumulative, running = [], 0
        for bound, c in zip(bounds, h["buckets"]):
            running += c
            cumulative.append((bound, running))
        latency.add_metric([op], cumulative, sum_value=h["sum"])
    yield latency

    yield CounterMetricFamily("psframework_received_bytes", "Bytes received from peers.",
                              value=snap.get("bytes_in", 0))
    yield CounterMetricFamily("psframework_sent_bytes", "Bytes sent to peers.",
                              value=snap.get("bytes_out", 0))
    yield GaugeMetricFamily("psframework_connections", "Connections open to this server.",
                            value=snap.get("connections", 0))
    if snap.get("rss") is not None:
        yield GaugeMetricFamily("psframework_resident_memory_bytes", "Resident memory of "
                                "the process this server runs in.", value=snap["rss"])
    once = snap.get("once", {})
    yield GaugeMetricFamily("psframework_once_window_entries", "Replies of once-only "
                            "requests remembered (and such requests running).",
                            value=once.get("entries", 0))
    yield GaugeMetricFamily("psframework_once_window_bytes", "Bytes of the remembered "
                            "replies of once-only requests.", value=once.get("bytes", 0))
    yield CounterMetricFamily("psframework_once_duplicates", "Resent once-only requests "
                              "answered from the window instead of applied again.",
                              value=snap.get("duplicates", 0))
    yield from (_shard if role == "shard" else _master)(snap)


def _shard(snap: dict) -> Iterator:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    parts = GaugeMetricFamily("psframework_partitions", "Partitions held, by model.",
                              labels=["model"])
    held = GaugeMetricFamily("psframework_partition_bytes", "Bytes of the partitions held, "
                             "by model.", labels=["model"])
    for model, usage in sorted(snap.get("models", {}).items()):
        parts.add_metric([model], len(usage["parts"]))
        held.add_metric([model], usage["bytes"])
    yield parts
    yield held
    if snap.get("memory_limit") is not None:
        yield GaugeMetricFamily("psframework_memory_limit_bytes", "Bytes of partitions this "
                                "shard may hold (memory_limit).", value=snap["memory_limit"])
    udf = CounterMetricFamily("psframework_udf_cpu_seconds", "CPU time spent inside model "
                              "ops, by op.", labels=["op"])
    for op, seconds in sorted(snap.get("udf_seconds", {}).items()):
        udf.add_metric([op], seconds)
    yield udf
    yield CounterMetricFamily("psframework_replica_misses", "Writes a backup refused "
                              "after the primary applied them.",
                              value=snap.get("replica_misses", 0))


def _master(snap: dict) -> Iterator:
    from prometheus_client.core import GaugeMetricFamily
    shards = GaugeMetricFamily("psframework_shards", "Shards known to the master, by state.",
                               labels=["state"])
    for state in ("alive", "dead"):
        shards.add_metric([state], snap.get("shards", {}).get(state, 0))
    yield shards
    models = snap.get("models", [])
    yield GaugeMetricFamily("psframework_models", "Models in the catalog.", value=len(models))
    families_ = {
        "parts": GaugeMetricFamily("psframework_model_partitions", "Partitions of a model.",
                                   labels=["model"]),
        "degraded": GaugeMetricFamily("psframework_model_partitions_degraded", "Partitions "
                                      "of a model short of a backup they should have.",
                                      labels=["model"]),
        "lost": GaugeMetricFamily("psframework_model_partitions_lost", "Partitions of a "
                                  "model with no copy left.", labels=["model"]),
    }
    training = GaugeMetricFamily("psframework_training", "The latest value a training loop "
                                 "reported for a model (AsyncClient.report).",
                                 labels=["model", "name"])
    for m in models:
        for key, family in families_.items():
            family.add_metric([m["name"]], m[key])
        for name, value in sorted(m.get("training", {}).items()):
            training.add_metric([m["name"], name], value)
    yield from families_.values()
    yield training
