"""Hostile and broken peers against a real master and shard, with a good client alongside.

Run (JSON on stdout, progress on stderr; about 90 s on 2 cores, about 15 s with --quick):

    python benchmarks/fuzz.py [--quick] [--reps N] > fuzz.json

Two phases, each on a fresh `LocalCluster(shards=1)` (real processes on loopback; the
--shards flag is ignored): `no_secret`, where anyone reaching a port may send requests
(malformed frames, bad requests, fake shard registrations, junk heartbeats, a tagged-read
flood, absurd create_model configs, wrong frame kinds), and `secret`, where only
pre-authentication traffic is possible (malformed frames, junk before the HELLO, wrong
MACs, requests before AUTH, 60 MB HELLOs, idle and half-open connections, slowloris).
Frames come from seeded generators (`config.seed`), so a run is reproducible; `--reps N`
multiplies the planned counts. The full run sends over 100,000 frames to each server.
A server that dies ends its part of the phase (`alive: false`); the exit code is 0
unless the benchmark itself fails. Only fuzz-* models are created, and destroyed.

What the numbers mean, per phase (MB = 1e6 bytes):

- servers.{master,shard}: `rss_mb` before the attack, the peak while it ran (sampled
  every 0.2 s) and after it, 2 s after every attack connection was closed; `sockets`
  (links in /proc/PID/fd starting with "socket:") at the same three moments; `alive`:
  the process still runs at the end.
- frames_sent.{master,shard}: frames sent, by kind (`after_hello/...`: after a completed
  handshake; a slowloris or 60 MB HELLO counts as one, though never finished).
- outcomes.{master,shard}: what the server did: probes it `closed` or left `silent` (no
  close within 1 s), `abandoned` ones (unfinished frames we closed ourselves),
  connections `reset` or `refused` mid-attack, requests that got `replies` (of which
  `error_replies`), `fuzz_models_created` (then destroyed), the `idle_connections` held
  for `plan.hold_s` and how many it closed (`idle_closed_by_server`, likewise for
  slowloris and 60 MB HELLOs), tasks `skipped` once it died or `plan.budget_s` ran out.
- good_client: a well-behaved `Client` pushing small integer deltas, pulling and asking
  for `status` throughout: `ops`, `errors` (also by op), the first `error_examples`,
  and `final_state_exact`: the pulled tables equal a numpy replay of its pushes.
- server_log: what the servers logged (to a temporary file, deleted after), by level,
  with the last line of each distinct traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import resource
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import msgpack

from common import arguments, log, machine
from fuzz_observe import GoodClient, Watch, log_summary, rss_mb, server_stderr, sockets
from fuzz_frames import (
    AUTHENTICATED, MAGIC, PREFIX, PROBES, TARGETS, UNFINISHED, fake_shard, frame, hello,
    master_request, raw, shard_request, tagged_read,
)
from psframework import LocalCluster
from psframework.protocol import Kind

SEED = 20240611
SESSION = 100  # requests per connection after a handshake
BIG_HELLO = 60_000_000
PIECE = bytes(1 << 20)
PLANS = {  # per server; `frames` is the no_secret phase, `preauth` the secret phase
    True: dict(frames=1_500, tagged=500, fake_shards=5, preauth=300, idle=200, hold_s=1.5,
               slowloris=3, big_hellos=2, budget_s=8),
    False: dict(frames=100_000, tagged=20_000, fake_shards=20, preauth=6_000, idle=1_000,
                hold_s=12.0, slowloris=5, big_hellos=6, budget_s=600),
}
class Peer:
    """A blocking socket with a short timeout; reads and discards what the server says."""

    def __init__(self, address: str, timeout: float = 2.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.closed = False  # by the server

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n and not self.closed:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                return None
            except OSError:
                chunk = b""
            self.closed = not chunk
            buf += chunk
        return bytes(buf) if len(buf) == n else None

    def read(self, n: int) -> list[tuple[int, int, object]]:
        """Up to n frames as (kind, rid, args): stop when the server closes or is silent."""
        out = []
        while len(out) < n:
            prefix = self._exactly(PREFIX.size)
            if prefix is None:
                break
            magic, hlen, plen = PREFIX.unpack(prefix)
            header = self._exactly(hlen) if magic == MAGIC else None
            if header is None or (plen and self._exactly(plen) is None):
                break
            try:
                kind, rid, _, _, args, _ = msgpack.unpackb(header, raw=False)
            except (ValueError, TypeError):  # not a frame we can read: stop listening
                break
            out.append((kind, rid, args))
        return out

    def gone(self) -> bool:
        """Whether the server has closed this connection (reading what it sent meanwhile)."""
        self.sock.setblocking(False)
        try:
            while self.sock.recv(1 << 16):
                pass
            self.closed = True
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True
        return self.closed

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


class Attack:
    """Runs seeded tasks against one server on a few threads, counting frames by kind and
    the server's reactions; stops once the server dies or the time budget is spent."""

    def __init__(self, server: str, address: str, proc, seed: str, budget_s: float) -> None:
        self.server, self.address, self.proc, self.seed = server, address, proc, seed
        self.deadline = time.monotonic() + budget_s
        self.frames: Counter = Counter()
        self.outcomes: Counter = Counter()
        self.lock = threading.Lock()
        self.ctx: dict = {}

    def count(self, kind: str, frames: int = 1, **outcomes: int) -> None:
        with self.lock:
            if frames:
                self.frames[kind] += frames
            self.outcomes.update(outcomes)

    def over(self) -> bool:
        return self.proc.poll() is not None or time.monotonic() > self.deadline

    def run(self, label: str, task, n: int, workers: int = 4) -> None:
        def one(i: int) -> None:
            if self.over():
                return self.count("skipped", 0, skipped=1)
            r = random.Random(f"{self.seed}:{self.server}:{label}:{i}")
            try:
                task(r)
            except ConnectionRefusedError:
                self.count("refused", 0, refused=1)
            except socket.timeout:
                self.count("timeout", 0, timeout=1)
            except OSError:  # reset, broken pipe: the server dropped us mid-send
                self.count("reset", 0, reset=1)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(n)))
        log(f"{self.server} {label}: {sum(self.frames.values())} frames so far, "
            f"{dict(self.outcomes)}")

    def probe(self, r: random.Random, after_hello: bool = False) -> None:
        """One malformed frame or handshake on a fresh connection, then read till close."""
        kind = r.choice(sorted(set(PROBES) - (set() if self.ctx["secret"] else AUTHENTICATED)))
        hello_first, make = PROBES[kind]
        with Peer(self.address, timeout=1.0) as peer:
            if after_hello or hello_first:
                peer.send(hello(r))
                peer.read(1)
            peer.send(make(r))
            frames = 1 + (after_hello or hello_first)
            label = "after_hello/" * (after_hello and not hello_first) + kind
            if kind in UNFINISHED:
                return self.count(label, frames, abandoned=1)
            peer.read(10)
            self.count(label, frames, closed=int(peer.closed), silent=int(not peer.closed))

    def session(self, r: random.Random, make, n: int = SESSION) -> list:
        """A handshake, then n requests from `make` (sometimes ending in a wrong kind,
        which closes the connection); returns the replies."""
        requests = [make(r, rid, self.ctx) for rid in range(1, n + 1)]
        if r.random() < 0.2:
            requests[-1] = ("wrong_kind", frame(r.choice(
                [Kind.HELLO, Kind.AUTH, Kind.WELCOME, Kind.REPLY, Kind.ERROR]), n))
        with Peer(self.address) as peer:
            peer.send(hello(r))
            peer.read(1)
            peer.send(b"".join(data for _, data in requests))
            replies = peer.read(n)
            with self.lock:
                self.frames.update(kind for kind, _ in requests)
                self.outcomes.update(replies=len(replies), closed=int(peer.closed),
                                     error_replies=sum(k == Kind.ERROR for k, _, _ in replies))
            for kind, rid, _ in replies:
                made = requests[rid - 1] if kind == Kind.REPLY and 0 < rid <= n else ("", b"")
                if made[0] == "create_model_absurd":
                    self.undo_creation(peer, made[1])
        return replies

    def undo_creation(self, peer: Peer, request: bytes) -> None:
        """An absurd model was created after all: destroy it (its name is in the frame)."""
        hlen = PREFIX.unpack_from(request)[1]
        model = msgpack.unpackb(request[PREFIX.size:PREFIX.size + hlen], raw=False)[3]
        peer.send(frame(Kind.REQUEST, 0, "destroy", model))
        peer.read(1)
        self.count("destroy_created", 1, fuzz_models_created=1)


# -- the two phases' attacks -----------------------------------------------------------------
def attack_open(atk: Attack, plan: dict, reps: int) -> None:
    """No secret: framing probes before and after a handshake, then sessions of bad requests
    (for the master: a tagged-read flood, fake shards, junk heartbeats, absurd models)."""
    frames = plan["frames"] * reps
    probes = frames // 10
    atk.run("framing", lambda r: atk.probe(r, after_hello=r.random() < 0.5), probes)
    if atk.server == "shard":
        atk.run("requests", lambda r: atk.session(r, shard_request), (frames - probes) // SESSION)
        return
    tagged = plan["tagged"] * reps
    atk.run("tagged_reads", lambda r: atk.session(r, tagged_read), tagged // SESSION)

    def register(r: random.Random) -> None:
        replies = atk.session(r, fake_shard, plan["fake_shards"])
        atk.ctx["fake_shards"] += [a["name"] for kind, _, a in replies if kind == Kind.REPLY
                                   and isinstance(a, dict) and isinstance(a.get("name"), str)]
    atk.run("fake_shards", register, 1)
    atk.run("requests", lambda r: atk.session(r, master_request),
            (frames - probes - tagged) // SESSION)


def attack_preauth(atk: Attack, plan: dict, reps: int) -> None:
    """With a secret: malformed frames and handshakes, 60 MB HELLOs, then idle and half-open
    connections held open while a few slowloris peers dribble a HELLO."""
    atk.run("preauth", atk.probe, plan["preauth"] * reps)
    if atk.proc.poll() is not None:
        return
    hold = plan["hold_s"]
    with ThreadPoolExecutor(plan["big_hellos"]) as pool:
        list(pool.map(lambda i: dribble(atk, "hello_60mb", i, BIG_HELLO, len(PIECE), 0, hold),
                      range(plan["big_hellos"])))
    n = min(plan["idle"], 1_100, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
    with ThreadPoolExecutor(plan["slowloris"]) as pool:
        slow = [pool.submit(dribble, atk, "slowloris", i, 1 << 20, 1, 0.1, hold + 1)
                for i in range(plan["slowloris"])]
        with contextlib.ExitStack() as held:
            peers = []
            for i in range(n):
                with contextlib.suppress(OSError):
                    peers.append(held.enter_context(Peer(atk.address)))
                    if i % 2:  # half-open: a HELLO, then silence
                        peers[-1].send(hello(random.Random(f"{atk.seed}:idle:{i}")))
                        atk.count("hello_then_idle")
            atk.count("idle", 0, idle_connections=len(peers), idle_refused=n - len(peers))
            time.sleep(hold)
            atk.count("idle", 0, idle_closed_by_server=sum(p.gone() for p in peers))
        for job in slow:
            job.result()


def dribble(atk: Attack, kind: str, i: int, declared: int, piece: int, pause: float,
            seconds: float) -> None:
    """A HELLO declaring `declared` payload bytes, sent `piece` bytes at a time with `pause`
    between and never finished, the connection held until `seconds` have passed. Payload
    pieces are one shared buffer: many 60 MB HELLOs cost this process 1 MB."""
    r = random.Random(f"{atk.seed}:{kind}:{i}")
    head = raw([int(Kind.HELLO), 0, "", "", {"version": 1, "nonce": r.randbytes(16)},
                [["|u1", [declared]]]], plen=declared)
    pieces = itertools.chain((head[k:k + piece] for k in range(0, len(head), piece)),
                             itertools.repeat(PIECE[:piece], declared // piece - 1))
    end = time.monotonic() + seconds
    try:
        with Peer(atk.address, timeout=10) as peer:
            for data in pieces:
                if time.monotonic() > end:
                    break
                peer.send(data)
                time.sleep(pause)
            time.sleep(max(0.0, end - time.monotonic()))
            closed = peer.gone()
    except socket.timeout:  # the server stopped reading, but kept the connection
        closed = False
    except OSError:
        closed = True
    atk.count(kind, 1, **{f"{kind}_closed_by_server": int(closed)})


# -- the good client, and watching the servers --------------------------------------------
def phase(name: str, secret: str | None, plan: dict, reps: int) -> dict:
    started = time.perf_counter()
    fd, log_path = tempfile.mkstemp(prefix=f"psf-fuzz-{name}-", suffix=".log")
    os.close(fd)
    cluster = LocalCluster(shards=1, secret=secret)
    with server_stderr(log_path):
        cluster.start()
    try:
        client = cluster.client()
        good = GoodClient(client, SEED)
        client.create_matrix("fuzz-target-m", *TARGETS["fuzz-target-m"])
        client.create_vector("fuzz-target-v", *TARGETS["fuzz-target-v"])
        shard = client.status()["servers"][0]
        procs = {"master": cluster.master_process, "shard": cluster.shard_processes[0]}
        addresses = {"master": cluster.address, "shard": shard["address"]}
        pids = {k: p.pid for k, p in procs.items()}
        before = {k: (rss_mb(pid), sockets(pid)) for k, pid in pids.items()}
        watch = Watch(pids)
        watch.start()
        good.start()
        attacks = {}
        for server in ("shard", "master"):
            atk = Attack(server, addresses[server], procs[server], f"{SEED}:{name}",
                         plan["budget_s"])
            atk.ctx = {"secret": secret, "real_shard": shard["name"], "fake_shards": []}
            (attack_preauth if secret else attack_open)(atk, plan, reps)
            attacks[server] = atk
        time.sleep(2)
        after = {k: (rss_mb(pid), sockets(pid)) if procs[k].poll() is None else (None, None)
                 for k, pid in pids.items()}
        watch.stopping.set()
        result_good = good.finish()
        with contextlib.suppress(Exception):
            for model in ("fuzz-target-m", "fuzz-target-v", *good.expected):
                client.destroy(model)
        servers = {k: {"rss_mb": {"before": before[k][0], "peak": watch.peak[k]["rss_mb"],
                                  "after": after[k][0]},
                       "sockets": {"before": before[k][1], "peak": watch.peak[k]["sockets"],
                                   "after_close_2s": after[k][1]},
                       "alive": procs[k].poll() is None} for k in pids}
    finally:
        cluster.stop()
    server_log = log_summary(log_path)
    os.unlink(log_path)
    return {"servers": servers,
            "frames_sent": {k: dict(sorted(a.frames.items())) for k, a in attacks.items()},
            "frames_total": {k: sum(a.frames.values()) for k, a in attacks.items()},
            "outcomes": {k: dict(sorted(a.outcomes.items())) for k, a in attacks.items()},
            "good_client": result_good, "server_log": server_log,
            "elapsed_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    a = arguments(__doc__, "small plan, for a smoke test (< 60 s)",
                  "multiply the planned frame counts (default 1)")
    reps, plan = a.reps or 1, PLANS[a.quick]
    started = time.perf_counter()
    phases = {}
    for name, secret in (("no_secret", None), ("secret", os.urandom(16).hex())):
        log(f"phase {name}: starting a LocalCluster with 1 shard")
        phases[name] = phase(name, secret, plan, reps)
        log(f"phase {name}: {json.dumps(phases[name]['servers'])}")
    planned = {"no_secret": plan["frames"] * reps,  # at least: a probe may send two frames
               "secret": plan["preauth"] * reps + plan["idle"] // 2 + plan["big_hellos"]
               + plan["slowloris"]}
    result = {"benchmark": "fuzz", "machine": machine(),
              "config": {"quick": a.quick, "seed": SEED, "reps": reps, "shards": 1,
                         "frames_planned_per_server": planned, "plan": plan},
              "phases": phases, "elapsed_s": round(time.perf_counter() - started, 1)}
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
