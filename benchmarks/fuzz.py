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
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import msgpack
import numpy as np

from common import arguments, log, machine
from psframework import ConfigError, LocalCluster
from psframework.config import parse_address
from psframework.protocol import Kind, Message, encode

SEED = 20240611
PREFIX = struct.Struct("<4sIQ")
MAGIC = b"PSF1"
MAX_HEADER = 1 << 20  # the servers' default max_header_bytes
SESSION = 100  # requests per connection after a handshake
BIG_HELLO = 60_000_000
PIECE = bytes(1 << 20)
PLANS = {  # per server; `frames` is the no_secret phase, `preauth` the secret phase
    True: dict(frames=1_500, tagged=500, fake_shards=5, preauth=300, idle=200, hold_s=1.5,
               slowloris=3, big_hellos=2, budget_s=8),
    False: dict(frames=100_000, tagged=20_000, fake_shards=20, preauth=6_000, idle=1_000,
                hold_s=12.0, slowloris=5, big_hellos=6, budget_s=600),
}
JUNK = [None, True, -1, 1.5, 2**63 - 1, -2**63, 2**64 - 1, "", "0", "x" * 300, b"\x00" * 8,
        [], [1, "a"], {"k": [1, {"n": None}]}]


# -- frames ------------------------------------------------------------------------------
def frame(kind: int, rid: int = 0, op: str = "", model: str = "", args: dict | None = None,
          arrays: tuple = ()) -> bytes:
    """A well-framed message through the real encoder (no limits: oversize is the point)."""
    return b"".join(bytes(b) for b in encode(Message(kind, rid, op, model, args or {}, arrays)))


def raw(header: object, payload: bytes = b"", plen: int | None = None) -> bytes:
    """A frame with any header (bytes as they are, else msgpack) and any payload length."""
    h = header if isinstance(header, bytes) else msgpack.packb(header, use_bin_type=True)
    return PREFIX.pack(MAGIC, len(h), len(payload) if plen is None else plen) + h + payload


def hello(r: random.Random, **args) -> bytes:
    return frame(Kind.HELLO, args={"version": 1, "nonce": r.randbytes(16), **args})


def pull_frame(r: random.Random, rid: int = 1) -> bytes:
    rows = np.array([r.randrange(64) for _ in range(4)], np.int64)
    return frame(Kind.REQUEST, rid, "pull_rows", "fuzz-target-m", {"table": "values", "part": 0},
                 (rows,))


def truncated(r: random.Random) -> bytes:
    request = pull_frame(r)
    return request[:r.randrange(1, len(request))]


NOT_SIX = [[], 5, "s", None, 1.5, {"a": 1}, [3, 1, "ping", "", {}], [3, 1, "ping", "", {}, [], 7],
           [99, 1, "", "", {}, []], [3, -1, "", "", {}, []], [3, 1, 5, "", {}, []],
           [3, 1, "", "", [], []], [3, 1, "", "", {}, {}], [True, 1, "", "", {}, []]]
BAD_DESCRIPTORS = [["<c16", [1]], ["|O", [1]], ["<f2", [1]], [">f8", [1]], ["<U4", [1]],
                   ["<f8", [1] * 9], ["<f8", [-1]], ["<f8", [True]], ["<f8", [1.5]], ["<f8", "x"],
                   ["<f8"], 5, ["<f8", [2**62, 2**62]], ["<f8", [0, 2**63 - 1]]]
#: One bad frame on a fresh connection: name -> (whether a HELLO goes first, the frame).
PROBES = {
    "random_bytes": (False, lambda r: r.randbytes(r.randint(16, 600))),
    "random_lengths": (False, lambda r: PREFIX.pack(MAGIC, r.getrandbits(32), r.getrandbits(64))
                       + r.randbytes(r.randint(0, 256))),
    "header_too_long": (False, lambda r: PREFIX.pack(MAGIC, r.randint(MAX_HEADER + 1, 2**32 - 1),
                                                     0)),
    "header_not_msgpack": (False, lambda r: raw(b"\xc1" + r.randbytes(r.randint(0, 64)))),
    "header_not_6_list": (False, lambda r: raw(r.choice(NOT_SIX))),
    "payload_mismatch": (False, lambda r: raw([3, 1, "ping", "", {}, [["<f8", [4]]]], bytes(32),
                                              plen=r.choice([0, 8, 31, 40, 2**40]))),
    "bad_descriptor": (False, lambda r: raw([3, 1, "ping", "", {}, [r.choice(BAD_DESCRIPTORS)]])),
    "payload_2gb": (False, lambda r: raw([3, 1, "ping", "", {}, [["|u1", [2**31 - 8]]]],
                                         r.randbytes(4096), plen=2**31 - 8)),
    "truncated": (False, truncated),
    "garbage_before_hello": (False, lambda r: r.randbytes(r.randint(1, 64)) + hello(r)),
    "hello_bad_version": (False, lambda r: hello(r, version=r.choice(JUNK + [0, 2]))),
    "hello_bad_nonce": (False, lambda r: hello(r, nonce=r.choice(
        JUNK + [b"x" * 15, b"x" * 17, "x" * 16]))),
    "hello_twice": (True, hello),
    "auth_wrong_mac": (True, lambda r: frame(Kind.AUTH, args={"mac": r.randbytes(32)})),
    "auth_junk_mac": (True, lambda r: frame(Kind.AUTH, args={
        "mac": r.choice(JUNK + [r.randbytes(4096), b""])})),
    "request_first": (False, pull_frame),
    "request_before_auth": (True, pull_frame),
    "wrong_kind_first": (False, lambda r: frame(r.choice([Kind.AUTH, Kind.WELCOME, Kind.REPLY,
                                                          Kind.ERROR]))),
}
#: the server must wait for the rest of these: we close right after sending
UNFINISHED = {"payload_2gb", "truncated"}
#: without a secret these are ordinary requests, answered on an open connection
AUTHENTICATED = {"request_first", "request_before_auth"}


# -- requests after a handshake (no secret) ----------------------------------------------
TARGETS = {"fuzz-target-m": (64, 8), "fuzz-target-v": (64,)}
BAD_TAGS = [[], [b"x"], [b"x", 1, 2], ["str", 1], [b"x" * 65, 1], [b"x", "1"], 5, b"raw",
            {"a": 1}, [b"x", 2**64 - 1], [b"x", -2**63]]


def data_arrays(r: random.Random, op: str, shape: tuple) -> tuple:
    n = r.randint(0, 8)
    rows = np.array([r.randrange(shape[0]) for _ in range(n)], np.int64)
    cols = np.array([r.randrange(shape[-1]) for _ in range(n)], np.int64)
    values = np.ones((n, *shape[1:]) if op == "push_rows" else n, np.float32)
    return {"pull_rows": (rows,), "pull_elems": (rows, cols), "push_rows": (rows, values),
            "push_elems": (rows, cols, values)}[op]


def random_arrays(r: random.Random) -> tuple:
    dtypes = ["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u8", "<f4", "<f8"]
    return tuple(np.zeros([r.randint(0, 3) for _ in range(r.randint(0, 3))], r.choice(dtypes))
                 for _ in range(r.randint(0, 4)))


def shard_request(r: random.Random, rid: int, ctx: dict) -> tuple[str, bytes]:
    """A request to the shard with one flaw (or none), on the fuzz-target models."""
    kind = r.choice(["unknown_op", "unknown_model", "bad_part", "bad_table", "bad_uid",
                     "bad_once", "bad_arrays", "out_of_range", "wrong_dtype", "tagged_pull",
                     "valid"])
    model = r.choice(sorted(TARGETS))
    op = r.choice(["push_rows", "push_elems"] + ["pull_rows", "pull_elems"] * (
        kind != "wrong_dtype"))
    args: dict = {"table": "values", "part": 0}
    arrays = data_arrays(r, op, TARGETS[model])
    if kind == "unknown_op":
        op = "fuzz_" + r.randbytes(4).hex()
    elif kind == "unknown_model":
        model = r.choice(["", "fuzz-nope-" + r.randbytes(4).hex(), "\u2603" * 50, "x" * 2000])
    elif kind == "bad_part":
        args["part"] = r.choice(["0", 2**63 - 1, 2**64 - 1, -1, 1, 1.5, None, [0], b"\x00"])
    elif kind == "bad_table":
        args["table"] = r.choice(JUNK + [["values"], {"values": 1}])
    elif kind == "bad_uid":
        args["uid"] = r.choice(JUNK + [b"\x01" * 8])
    elif kind == "bad_once":
        args["once"] = r.choice(BAD_TAGS + [[r.randbytes(8), 2**63 - 1]])
    elif kind == "bad_arrays":
        arrays = random_arrays(r)
    elif kind == "out_of_range":
        bad = r.choice([np.array([-1]), np.array([TARGETS[model][0]]), np.array([2**63 - 1]),
                        np.array([2**64 - 1], np.uint64)])
        arrays = (bad,) + data_arrays(r, op, TARGETS[model])[1:]
    elif kind == "wrong_dtype":
        arrays = arrays[:-1] + (arrays[-1].astype(r.choice([np.float64, np.int32, np.bool_])),)
    elif kind == "tagged_pull":
        op, args["once"], arrays = "pull_rows", [r.randbytes(8), rid], (np.arange(64),)
    return kind, frame(Kind.REQUEST, rid, op, model, args, arrays)


def harmless(address: object) -> bool:
    """A fake shard's address the master would refuse, or 127.0.0.1:1: the master may try
    to reach a registered shard, and must never be sent anywhere but closed loopback."""
    try:
        return parse_address(str(address)) == ("127.0.0.1", 1)
    except ConfigError:
        return True


def absurd_config(r: random.Random) -> tuple[object, object]:
    """A create_model (type, config) that must fail: no table could ever be allocated."""
    t = {"name": "t", "shape": [64], "dtype": "float32", "parts": 0,
         "init": {"kind": "zeros"}, "aggregate": "add"}
    key, value = r.choice([
        ("shape", [2**62]), ("shape", [2**62, 2**62]), ("shape", [2**61, 2**40]), ("shape", [0]),
        ("shape", [-5]), ("shape", [1, 2, 3]), ("shape", ["x"]), ("parts", 200_000),
        ("parts", -1), ("parts", "x"), ("parts", 2**63 - 1), ("dtype", "object"),
        ("dtype", "complex128"), ("dtype", "float16"), ("dtype", 5), ("dtype", "evil["),
        ("init", {"kind": "uniform", "low": "a", "high": 1}), ("init", "zeros"),
        ("init", {"kind": "normal", "mean": 0, "std": -1}), ("init", {"kind": "evil"}),
        ("init", {"kind": "uniform", "low": 0, "high": 1, "seed": -3}),
        ("aggregate", "evil"), ("aggregate", 5), ("partition_by", "diagonal"),
        ("partitioner", "evil"), ("evil", 1), ("type", "fuzz-no-such-type"), ("type", ""),
        ("config", [1]), ("config", {"tables": "x"}), ("config", {"tables": [5]}),
        ("config", {"tables": [{}]}), ("config", {"tables": [t, t]})])
    if key in ("type", "config"):
        return (value, {"tables": [t]}) if key == "type" else ("tables", value)
    return "tables", {"tables": [{**t, key: value}]}


def master_request(r: random.Random, rid: int, ctx: dict) -> tuple[str, bytes]:
    kind = r.choice(["unknown_op", "register_garbage", "heartbeat_junk", "create_model_absurd",
                     "lookup_junk", "destroy_unknown", "status_junk_args"])
    model, args, op = "", {}, kind.split("_")[0]
    if kind == "unknown_op":
        op = "fuzz_" + r.randbytes(4).hex()
    elif kind == "register_garbage":
        address = r.choice(JUNK + ["host:notaport", ":0", "127.0.0.1:0", "127.0.0.1:70000",
                                   "[::1]:99999", "127.0.0.1:-1", "x" * 5000 + ":x"])
        args["address"] = address if harmless(address) else "127.0.0.1:notaport"
    elif kind == "heartbeat_junk":
        args["name"] = r.choice(ctx["fake_shards"] + [ctx["real_shard"]] + JUNK)
        args["stats"] = r.choice(JUNK + [[1], {"bytes": "lots", "ops": [1, 2], "pid": {"x": 1}},
                                         {"ops": {"pull_rows": "NaN"}}, nested(r, 20)])
    elif kind == "create_model_absurd":
        op, model = "create_model", "fuzz-" + r.randbytes(6).hex()
        args["type"], args["config"] = absurd_config(r)
        args["once"] = [r.randbytes(8), rid]
    elif kind == "lookup_junk":
        model = r.choice(["", "fuzz-nope-" + r.randbytes(4).hex(), "\x00" * 100])
        args["once"] = r.choice(BAD_TAGS)
    elif kind == "destroy_unknown":
        model, args["once"] = "fuzz-nope-" + r.randbytes(4).hex(), [r.randbytes(8), rid]
    elif kind == "status_junk_args":
        args = {str(i): r.choice(JUNK) for i in range(r.randint(1, 20))}
    return kind, frame(Kind.REQUEST, rid, op, model, args)


def nested(r: random.Random, depth: int) -> object:
    if depth == 0:
        return r.choice(JUNK)
    inner = nested(r, depth - 1)
    return [inner] if r.random() < 0.5 else {"k": inner}


def fake_shard(r: random.Random, rid: int, ctx: dict) -> tuple[str, bytes]:
    """A shard registration at a closed loopback port: the master believes it for a while."""
    return "register_fake_shard", frame(Kind.REQUEST, rid, "register",
                                        args={"address": "127.0.0.1:1"})


def tagged_read(r: random.Random, rid: int, ctx: dict) -> tuple[str, bytes]:
    """A read the master need not remember, tagged once-only with a fresh tag."""
    op = "status" if r.random() < 0.8 else "lookup"
    model = "" if op == "status" else "fuzz-good-matrix"
    return f"tagged_{op}", frame(Kind.REQUEST, rid, op, model, {"once": [r.randbytes(8), rid]})


# -- the attacker's side of a connection ---------------------------------------------------
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
    with contextlib.suppress(OSError):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) * 1024 / 1e6, 1)
    return None


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
