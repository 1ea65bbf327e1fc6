"""What benchmarks/fuzz.py watches while it attacks: the servers' memory and sockets
(from /proc), what they log, and a well-behaved client working alongside."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import Counter

import numpy as np

from procs import rss_bytes


class GoodClient(threading.Thread):
    """A well-behaved user throughout the attack: pushes small integer deltas (exact in
    float64 and int64), pulls, asks for status, and replays its pushes in numpy."""

    def __init__(self, client, seed: int) -> None:
        super().__init__(daemon=True)
        self.client, self.rng = client, np.random.default_rng(seed)
        client.create_matrix("fuzz-good-matrix", 32, 4, "float64")
        client.create_vector("fuzz-good-vector", 256, "int64")
        self.expected = {"fuzz-good-matrix": np.zeros((32, 4)),
                         "fuzz-good-vector": np.zeros(256, np.int64)}
        self.ops, self.errors, self.examples = 0, Counter(), []
        self.stopping = threading.Event()

    def attempt(self, op: str, fn) -> bool:
        self.ops += 1
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            self.errors[op] += 1
            if len(self.examples) < 5:
                self.examples.append(f"{op}: {type(e).__name__}: {str(e)[:300]}")
            return False

    def same(self, name: str) -> None:
        pulled = self.client.pull_rows(name, "values", np.arange(len(self.expected[name])))
        if not np.array_equal(pulled, self.expected[name]):
            raise AssertionError(f"{name} differs from the replay of its pushes")

    def run(self) -> None:
        for i in itertools.count():
            if self.stopping.wait(0.005):
                return
            name = sorted(self.expected)[i % 2]
            want = self.expected[name]
            rows = self.rng.integers(0, len(want), 8)
            delta = self.rng.integers(-5, 6, (8, *want.shape[1:])).astype(want.dtype)
            if i % 20 == 19:
                self.attempt("status", self.client.status)
            elif i % 4 == 3:
                self.attempt("pull", lambda: self.same(name))
            elif self.attempt("push", lambda: self.client.push_rows(name, "values", rows, delta)):
                np.add.at(want, rows, delta)

    def finish(self) -> dict:
        self.stopping.set()
        self.join(60)
        exact = all([self.attempt("final_pull", lambda n=n: self.same(n)) for n in self.expected])
        return {"ops": self.ops, "errors": sum(self.errors.values()),
                "errors_by_op": dict(self.errors), "error_examples": self.examples,
                "final_state_exact": exact}


def rss_mb(pid: int) -> float | None:
    rss = rss_bytes(pid)
    return None if rss is None else round(rss / 1e6, 1)


def sockets(pid: int) -> int | None:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    n = 0
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return n


class Watch(threading.Thread):
    """Samples the servers' RSS and open sockets every 0.2 s; keeps the peaks."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.stopping = pids, threading.Event()
        self.peak = {name: {"rss_mb": 0.0, "sockets": 0} for name in pids}

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            for name, pid in self.pids.items():
                for key, value in (("rss_mb", rss_mb(pid)), ("sockets", sockets(pid))):
                    self.peak[name][key] = max(self.peak[name][key], value or 0)


@contextlib.contextmanager
def server_stderr(path: str):
    """Servers inherit fd 2 when they start: point it at a file meanwhile, so their logs
    (a warning per refused connection) land there instead of among the progress lines."""
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def log_summary(path: str) -> dict:
    """Lines by level, and the exception line ending each traceback, counted."""
    levels, examples, tracebacks, in_traceback = Counter(), [], Counter(), False
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        level = next((w for w in ("WARNING", "ERROR", "CRITICAL") if f" {w} " in line), "other")
        levels[level] += 1
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith(" "):
            tracebacks[line[:200]] += 1
            in_traceback = False
        elif level in ("ERROR", "CRITICAL") and len(examples) < 5:
            examples.append(line[:300])
    return {"lines": sum(levels.values()), "by_level": dict(levels),
            "tracebacks": dict(tracebacks.most_common(10)), "error_examples": examples}
