"""Watching processes' memory from /proc: peaks sampled in a background thread, RSS per
kind of process over a Spark application's tree (driver, JVM, Python workers) and the
psframework servers it started."""

from __future__ import annotations

import os
import threading
from typing import Callable

PAGE, MB = os.sysconf("SC_PAGE_SIZE"), 2**20


class Peaks:
    """The peak of each quantity `measure()` returns (name -> bytes), sampled every
    `interval` seconds in a background thread while the `with` block runs."""

    def __init__(self, measure: Callable[[], dict[str, int]], interval: float) -> None:
        self.measure, self.interval = measure, interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _take(self) -> None:
        for name, value in self.measure().items():
            self.peak[name] = max(self.peak.get(name, 0), value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def __enter__(self) -> "Peaks":
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def mb(self) -> dict[str, int]:
        return {name: round(value / MB) for name, value in sorted(self.peak.items())}


def own_rss() -> dict[str, int]:
    return {"driver": rss_bytes(os.getpid()) or 0}


_argv: dict[tuple[int, int], list[str]] = {}  # (pid, start time): a pid may be reused


def _process(pid: int) -> tuple[int, int, list[str]]:
    """(parent pid, RSS bytes, argv) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces
    parent, start, rss = int(fields[1]), int(fields[19]), int(fields[21]) * PAGE
    if (pid, start) not in _argv:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            _argv[pid, start] = f.read().decode(errors="replace").split("\0")
    return parent, rss, _argv[pid, start]


def _kind(argv: list[str], under_jvm: bool) -> str | None:
    program = os.path.basename(argv[0])
    if "psframework" in argv and "serve" in argv:
        return "ps_master" if "master" in argv else "ps_shards"
    if program == "java":
        return "jvm"
    if under_jvm and program.startswith("python"):
        return "python_workers"
    return None


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket inodes in /proc/net)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        ports = set()
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}") as f:
                for line in list(f)[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports
    except OSError:
        return set()


def tree_rss() -> dict[str, int]:
    """RSS summed per kind over this process and its descendants, plus the shards of
    this process's masters wherever they are (a shard outlives the Python worker that
    started it, and is then no one's descendant here)."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                procs[int(entry)] = _process(int(entry))
            except OSError:  # exited meanwhile
                pass
    children: dict[int, list[int]] = {}
    for pid, (parent, *_) in procs.items():
        children.setdefault(parent, []).append(pid)
    me = os.getpid()
    kinds, todo = {me: "driver"}, [(c, False) for c in children.get(me, [])]
    while todo:
        pid, under_jvm = todo.pop()
        kinds[pid] = _kind(procs[pid][2], under_jvm)
        todo += [(c, under_jvm or kinds[pid] == "jvm") for c in children.get(pid, [])]
    ports = set().union(*(_listening_ports(p) for p, k in kinds.items() if k == "ps_master"))
    for pid, (*_, argv) in procs.items():
        shard = pid not in kinds and _kind(argv, False) == "ps_shards" and "--master" in argv
        if shard and int(argv[argv.index("--master") + 1].rpartition(":")[2]) in ports:
            kinds[pid] = "ps_shards"
    out: dict[str, int] = {}
    for pid, kind in kinds.items():
        if kind is not None and pid in procs:
            out[kind] = out.get(kind, 0) + procs[pid][1]
    return out


def rss_bytes(pid: int) -> int | None:
    """Process `pid`'s resident memory, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return None
