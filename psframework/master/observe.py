"""What the master shows of the cluster: the `status` report (its own numbers, every
shard's from its heartbeats, every model's placement), the snapshot its Prometheus
endpoint serves (psframework.metrics, with --metrics-port), and the training gauges.

Training loops `report` gauges per model (loss, pairs/s, ...); the master keeps the
latest value of each, at most MAX_TRAINING_VALUES per model, until the model is
destroyed, and shows them in `status` and on its metrics endpoint.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from psframework.errors import ConfigError, PSError
from psframework.master.messages import MAX_TRAINING_VALUES, TrainingReport, parse
from psframework.metrics import MetricsEndpoint, resident_bytes
from psframework.protocol import Message

if TYPE_CHECKING:
    from psframework.master.server import Master

__all__ = ["Observer"]


class Observer:
    def __init__(self, master: "Master") -> None:
        self.master = master
        self.metrics: MetricsEndpoint | None = None
        # model -> (its training gauges by name, time.time() of the latest report)
        self.training: dict[str, tuple[dict[str, float], float]] = {}

    def start(self) -> None:
        """Serve the metrics endpoint, when the settings ask for one."""
        s = self.master.settings
        if s.metrics_port is not None:
            self.metrics = MetricsEndpoint("master", self.snapshot, asyncio.get_running_loop())
            self.metrics.start(s.metrics_host, s.metrics_port)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()

    def report(self, msg: Message):
        """Keep the latest training gauges of a model (see the module docstring)."""
        entry = self.master.entry(msg.model)
        try:
            values = parse(TrainingReport, msg.args, "report").values
        except PSError as e:
            raise ConfigError(f"training values must be finite numbers named by 1-64 "
                              f"letters, digits or _.:- ({e.message})", model=entry.name) from None
        kept = {**self.training.get(entry.name, ({}, 0.0))[0], **values}
        if len(kept) > MAX_TRAINING_VALUES:
            raise ConfigError(f"model {entry.name!r} would have {len(kept)} training values; "
                              f"at most {MAX_TRAINING_VALUES} are kept per model: report "
                              "fewer names", model=entry.name)
        self.training[entry.name] = (kept, time.time())
        return {}, ()

    def forget(self, model: str) -> None:
        """Drop a destroyed model's training gauges."""
        self.training.pop(model, None)

    def _training(self, model: str) -> dict:
        values, at = self.training.get(model, ({}, None))
        return {"values": dict(values), "age": None if at is None else round(time.time() - at, 3)}

    def _own_stats(self) -> dict:
        """The master's own numbers, as a shard reports its own."""
        m = self.master
        return {"name": "master", "address": m.address, "ops": dict(m.requests.arrivals),
                "requests": m.requests.summary(), "bytes_in": m.traffic.bytes_in,
                "bytes_out": m.traffic.bytes_out, "connections": m.traffic.connections,
                "once": {"entries": len(m.once), "bytes": m.once.nbytes},
                "duplicates": m.once.duplicates, "rss": resident_bytes(),
                "metrics": self.metrics.address if self.metrics is not None else None}

    def snapshot(self) -> dict:
        """What a scrape of the metrics endpoint shows (see psframework.metrics)."""
        m = self.master
        alive = len(m.alive())
        return {**self._own_stats(), "latency": m.requests.histograms(),
                "shards": {"alive": alive, "dead": len(m.servers) - alive},
                "models": [{"name": e.name, "parts": len(e.placement),
                            "degraded": len(e.degraded()), "lost": len(e.lost),
                            "training": self.training.get(e.name, ({}, 0.0))[0]}
                           for e in m.models.values()]}

    def status(self, msg: Message):
        m = self.master
        now = time.monotonic()
        return {
            "address": m.address,
            "checkpoint_dir": None if m.settings.checkpoint_dir is None else
            str(m.settings.checkpoint_dir),
            "master": self._own_stats(),
            "servers": [{"name": s.name, "address": s.address, "alive": s.alive,
                         "last_seen": round(now - s.last_seen, 3), "bytes": s.stats.bytes,
                         "pid": s.stats.pid, "ops": dict(s.stats.ops),
                         "connections": s.stats.connections,
                         "requests": {op: o.model_dump() for op, o in s.stats.requests.items()},
                         "bytes_in": s.stats.bytes_in, "bytes_out": s.stats.bytes_out,
                         "once": s.stats.once.model_dump(), "rss": s.stats.rss,
                         "metrics": s.stats.metrics}
                        for s in m.servers.values()],
            "models": [{**e.describe(m.servers), "training": self._training(e.name)}
                       for e in m.models.values()],
        }, ()
