"""Bad input gets a typed error and loses nothing; failures end in an error, not a hang."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from psframework import (
    ConnectionLostError, DTypeError, ProtocolError, ShapeError, UnknownModelError,
    load_settings,
)
from psframework.config import parse_address
from psframework.errors import error_from_wire
from psframework.protocol import Kind, Message, encode
from conftest import model_stats, wait_until
from proxy import ReplyDropper
from wire import handshaken, read_frames


def test_garbage_gets_a_protocol_error_and_others_carry_on(client):
    m = client.create_matrix("faults-m", 20, 4, "float64")
    m.push_rows([2], [[1.0, 2.0, 3.0, 4.0]])
    for address in [client.master, *client.model("faults-m").servers.values()]:
        with socket.create_connection(parse_address(address)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            (reply,) = read_frames(s)
            assert reply.kind == Kind.ERROR
            err = error_from_wire(reply.args)
            assert isinstance(err, ProtocolError) and "not a psframework frame" in str(err)
            assert s.recv(1) == b""  # and the connection is closed
        with handshaken(address) as s:  # a sound prefix around a header that is not msgpack
            s.sendall(b"PSF1" + (5).to_bytes(4, "little") + (0).to_bytes(8, "little") + b"\xc1" * 5)
            (reply,) = read_frames(s)
            assert isinstance(error_from_wire(reply.args), ProtocolError)
    np.testing.assert_array_equal(m.pull_rows([2]), [[1.0, 2.0, 3.0, 4.0]])


def test_oversized_request_is_refused_and_the_connection_survives(fresh_cluster):
    cluster = fresh_cluster(1, max_frame_bytes=256 * 1024)
    c = cluster.client()
    c.create_matrix("m", 10, 3, "float32")
    address = next(iter(c.model("m").servers.values()))
    with handshaken(address) as s:
        big = Message(Kind.REQUEST, 7, "push_rows", "m", {"table": "values"},
                      (np.zeros(100_000, np.int64),))  # 800 KB > 256 KiB
        s.sendall(b"".join(encode(big)) + b"".join(encode(Message(Kind.REQUEST, 8, "ping"))))
        refused, pong = read_frames(s, want=2)
        assert refused.kind == Kind.ERROR and refused.rid == 7
        assert "exceeds this server's max_frame_bytes" in refused.args["message"]
        assert pong.kind == Kind.REPLY and pong.rid == 8


def test_wrong_shapes_dtypes_and_indices_are_typed_errors(client):
    m = client.create_matrix("faults-shapes", 30, 5, "int32")
    with pytest.raises(ShapeError, match="expected \\[2, 5\\]"):
        m.push_rows([1, 2], np.ones((2, 4), "i4"))
    with pytest.raises(DTypeError, match="cannot push float64 values into int32"):
        m.push_rows([1], np.ones((1, 5)))
    with pytest.raises(ShapeError, match="out of range"):
        m.pull_rows([0, 30])
    with pytest.raises(ShapeError, match="integers"):
        m.pull_rows([0.5])
    # a client that skips its own checks is stopped by the shard, which names itself
    address = client.model("faults-shapes").servers["shard-1"]
    part = client.model("faults-shapes").placement.index("shard-1")
    bad = client.aio.request(address, "push_rows", "faults-shapes", {"table": "values",
                             "part": part}, (np.array([0]), np.ones((1, 5), "f8")))
    with pytest.raises(Exception) as e:
        client.run(bad)
    assert type(e.value).__name__ == "DTypeError" and e.value.shard == "shard-1"
    oob = client.aio.request(address, "pull_rows", "faults-shapes",
                             {"table": "values", "part": part}, (np.array([10_000]),))
    with pytest.raises(ShapeError, match="out of range for partition"):
        client.run(oob)
    m.push_rows([4], np.full((1, 5), 7, "i4"))  # and everything still works
    np.testing.assert_array_equal(m.pull_rows([4]), np.full((1, 5), 7))


def test_killed_shard_is_reported_not_hung(fresh_cluster):
    cluster = fresh_cluster(2)
    c = cluster.client(settings=load_settings(retry_deadline=1.0, request_timeout=3.0))
    m = c.create_matrix("m", 100, 4, "float32")
    assert m.to_numpy().shape == (100, 4)
    pid = cluster.shard_processes[0].pid
    victim = wait_until(lambda: [s["name"] for s in c.status()["servers"] if s["pid"] == pid])
    cluster.kill_shard(0)
    started = time.monotonic()
    # lost (no replica, no checkpoint) once the master has seen it die; before, given up
    with pytest.raises(ConnectionLostError, match="is lost: its shard died|gave up after "
                       "retrying") as e:
        m.to_numpy()
    assert [e.value.shard] == victim and e.value.model == "m"
    assert time.monotonic() - started < 30  # a bound against hanging, not a speed check
    dead = wait_until(lambda: [s["name"] for s in c.status()["servers"] if not s["alive"]])
    assert dead == victim


def test_push_whose_reply_is_lost_is_resent_and_applied_once(behind):
    c, proxy = behind(lambda target: ReplyDropper(target, drop_op="push_rows"))
    m = c.create_matrix("m", 8, 2, "int64")
    m.push_rows([3, 3, 5], [[1, 1], [10, 10], [100, 100]])
    assert proxy.dropped == 1
    expected = np.zeros((8, 2), np.int64)
    expected[3] = 11
    expected[5] = 100
    np.testing.assert_array_equal(m.to_numpy(), expected)
    stats = model_stats(c, "m")
    assert stats["ops"]["push_rows"] == 2  # sent twice ...
    assert stats["duplicates"] == 1  # ... and recognised once as a resend


def test_shards_exit_when_the_master_goes_away(fresh_cluster):
    cluster = fresh_cluster(2, master_grace=1.0)
    cluster.master_process.kill()
    for shard in cluster.shard_processes:
        wait_until(lambda: shard.poll() is not None, timeout=30)


def test_a_shard_told_to_shut_down_exits_and_the_others_serve_on(fresh_cluster):
    cluster = fresh_cluster(2)
    client = cluster.client()
    servers = [s["address"] for s in client.status()["servers"]]
    reply = client.run(client.aio.request(servers[0], "shutdown", retry=False))
    assert reply.args == {"stopping": True}
    shards = cluster.shard_processes
    wait_until(lambda: sum(p.poll() is not None for p in shards) == 1, timeout=30)
    assert sum(p.poll() == 0 for p in shards) == 1  # a clean exit
    client.run(client.aio.request(servers[1], "ping", retry=False))  # the other serves on


def test_catalog_changes_are_exactly_once_and_lookups_refresh(fresh_cluster):
    """A create resent with the same tag answers like the first; and a client whose
    cached placement went stale is refused (not served the new model's data by the same
    shard) and finds the model again on its next call."""
    client = fresh_cluster(1).client()
    args = {"type": "tables", "once": [b"one-stream", 1, 1], "config": {"tables": [
        {"name": "values", "shape": [6, 2], "dtype": "int64"}]}}
    first = client.run(client.aio.request(client.master, "create_model", "again", args)).args
    resent = client.run(client.aio.request(client.master, "create_model", "again", args)).args
    assert resent == first
    other = client.aio.__class__(client.master)  # a second client that destroys and re-creates
    client.push_rows("again", "values", [1], [[1, 1]])
    client.run(other.destroy("again"))
    client.run(other.create_vector("again", 9, "int64", parts=1))
    with pytest.raises(UnknownModelError, match="destroyed and created again"):
        client.pull_rows("again", "values", [0])  # the stale placement fails once ...
    np.testing.assert_array_equal(client.pull_rows("again", "values", [8]), [0])  # ... then not
    client.run(other.close())
