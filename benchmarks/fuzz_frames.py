"""What benchmarks/fuzz.py sends: malformed frames, bad requests and hostile messages,
each made by a seeded generator, built with psframework's own encoder or by hand."""

from __future__ import annotations

import random
import struct

import msgpack
import numpy as np

from psframework import ConfigError
from psframework.config import parse_address
from psframework.protocol import Kind, Message, encode

PREFIX = struct.Struct("<4sIQ")
MAGIC = b"PSF1"
MAX_HEADER = 1 << 20  # the servers' default max_header_bytes
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
