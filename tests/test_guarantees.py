"""The guarantees of docs/architecture.md, each proven on real processes: exactly once
across lost replies, resends that meet a running first attempt, retries only where they
are safe, timeouts that say what is unknown, backpressure, streams that lose their
framing, and huge requests that stream through a bounded window."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

from psframework import (
    Client, ConnectionLostError, DTypeError, RequestTimeoutError, Settings, init, load_settings,
)
from psframework.client.core import WINDOW_CHUNKS
from psframework.errors import error_from_wire
from psframework.protocol import Kind, Message
from conftest import model_stats, wait_until
from proxy import Corrupter, ReplyDropper
from wire import handshaken, read_frames, send

BIG = np.zeros(Settings().inline_below // 8, np.int64)  # arrays this big run a threaded op on the pool


# -- exactly once across lost replies -------------------------------------------------------------
def test_a_push_elems_whose_reply_is_lost_is_applied_once(behind):
    client, proxy = behind(lambda target: ReplyDropper(target, "push_elems"))
    m = client.create_matrix("m", 6, 4, "int64")
    m.push([1, 1, 5], [0, 0, 3], [2, 3, 7])
    assert proxy.dropped == 1
    expected = np.zeros((6, 4), np.int64)
    expected[1, 0], expected[5, 3] = 5, 7
    np.testing.assert_array_equal(m.to_numpy(), expected)
    stats = model_stats(client, "m")
    assert stats["ops"]["push_elems"] == 2 and stats["duplicates"] == 1


def test_a_once_call_whose_reply_is_lost_is_applied_once(behind):
    client, proxy = behind(lambda target: ReplyDropper(target, "scale_rows"))
    client.create_model("sc", "scaler", {"rows": 8, "cols": 3, "seed": 1})
    weights = client.matrix("sc", "weights")
    before = weights.to_numpy()
    (args, (sums,)), = client.call("sc", "scale_rows", {"factor": 3.0}, (np.array([2, 5]),),
                                   once=True)
    assert proxy.dropped == 1 and args["calls"] == 1  # the remembered reply of the one run
    expected = before.copy()
    expected[[2, 5]] *= 3.0
    np.testing.assert_array_equal(weights.to_numpy(), expected)
    np.testing.assert_allclose(sums, expected[[2, 5]].sum(axis=1))


def test_a_call_without_once_is_not_resent_blindly(behind):
    client, proxy = behind(lambda target: ReplyDropper(target, "scale_rows"))
    client.create_model("sc", "scaler", {"rows": 8, "cols": 3, "seed": 1})
    weights = client.matrix("sc", "weights")
    before = weights.to_numpy()
    with pytest.raises(ConnectionLostError, match="may or may not have run"):
        client.call("sc", "scale_rows", {"factor": 3.0}, (np.array([2]),))
    expected = before.copy()
    expected[2] *= 3.0  # it ran once: not twice, as a blind resend would have made it
    np.testing.assert_array_equal(weights.to_numpy(), expected)


def test_a_resend_that_meets_the_first_attempt_still_running_waits_for_it(fresh_cluster):
    cluster = fresh_cluster(1)
    client = cluster.client(settings=load_settings(request_timeout=0.5, retry_deadline=30))
    client.create_model("sc", "scaler", {"rows": 4, "cols": 2})
    # the reply takes 2 s, the client waits 0.5 s and resends: the resend must join the first
    (args, _), = client.call("sc", "nap", {"seconds": 2.0}, (BIG,), once=True)
    assert args["naps"] == 1
    assert model_stats(client, "sc")["duplicates"] >= 1
    (args, _), = client.call("sc", "nap", {"seconds": 0.0}, (BIG,), once=True)
    assert args["naps"] == 2  # the first call ran once


def test_a_timeout_says_the_outcome_is_unknown_and_is_not_resent(fresh_cluster):
    cluster = fresh_cluster(1)
    client = cluster.client(settings=load_settings(request_timeout=0.3, retry_deadline=30))
    client.create_model("sc", "scaler", {"rows": 4, "cols": 2})
    with pytest.raises(RequestTimeoutError, match="may or may not have run"):
        client.call("sc", "nap", {"seconds": 1.5}, (BIG,))
    naps = lambda: client.call("sc", "naps", idempotent=True)[0][0]["naps"]
    wait_until(lambda: naps() == 1, 30)  # the timed-out call ran on the shard ...
    (args, _), = client.call("sc", "nap", {"seconds": 0.0}, (BIG,), once=True)
    assert args["naps"] == 2  # ... once: it was not resent


def test_a_failed_tagged_request_is_forgotten_so_its_retry_applies(fresh_cluster):
    client = fresh_cluster(1).client()
    client.create_vector("v", 3, "int64", parts=1)
    info = client.model("v")
    (address,) = info.servers.values()
    args = {"table": "values", "part": 0, "uid": info.uid, "once": [b"raw", 1, 1]}
    with handshaken(address) as s:
        send(s, [Message(Kind.REQUEST, 1, "push_rows", "v", args, (np.array([1]), np.float64([1])))])
        assert isinstance(error_from_wire(read_frames(s)[0].args), DTypeError)
        send(s, [Message(Kind.REQUEST, 2, "push_rows", "v", args, (np.array([1]), np.int64([4])))])
        assert read_frames(s)[0].kind == Kind.REPLY
    np.testing.assert_array_equal(client.pull_rows("v", "values", [0, 1]), [0, 4])


# -- the transport --------------------------------------------------------------------------------
def test_a_full_socket_pauses_the_sender_until_the_server_reads_again(fresh_cluster):
    cluster = fresh_cluster(1, heartbeat_timeout=60.0)
    client = cluster.client(settings=load_settings(request_timeout=120))
    m = client.create_matrix("m", 2048, 4096, "float32")  # 32 MiB: more than any socket buffer
    (address,) = client.model("m").servers.values()
    m.pull_rows([0])  # connected before the shard stops reading
    shard = cluster.shard_processes[0]
    shard.send_signal(signal.SIGSTOP)
    try:
        pusher = threading.Thread(target=m.push_rows, args=(np.arange(2048),
                                                            np.ones((2048, 4096), "f4")))
        pusher.start()
        wait_until(lambda: (conn := client.aio._conns.get(address)) is not None
                   and not conn._writable.is_set(), 60)  # the kernel buffer is full
    finally:
        shard.send_signal(signal.SIGCONT)
    pusher.join(120)
    assert not pusher.is_alive()
    np.testing.assert_array_equal(m.pull_rows([0, 2047]), np.ones((2, 4096), "f4"))


@pytest.mark.parametrize("towards_server", [False, True])
def test_a_stream_that_loses_its_framing_is_resent_not_failed(behind, towards_server):
    client, proxy = behind(lambda target: Corrupter(target, every=7,
                                                    towards_server=towards_server))
    v = client.create_vector("v", 50, "int64", parts=1)
    proxy.armed.set()
    expected = np.zeros(50, np.int64)
    for i in range(60):
        idx = np.array([i % 50, (3 * i) % 50])
        v.push(idx, [i, 1])
        np.add.at(expected, idx, [i, 1])
        np.testing.assert_array_equal(v.pull(idx), expected[idx])
    proxy.armed.clear()
    assert proxy.corrupted >= 5
    np.testing.assert_array_equal(v.to_numpy(), expected)


def test_a_huge_request_streams_through_a_bounded_window(fresh_cluster):
    cluster = fresh_cluster(2)
    chunk = 64 * 1024
    client = cluster.client(settings=load_settings(chunk_bytes=chunk))
    n = 2_000_000
    v = client.create_vector("v", n, "float32", init=init.constant(3))
    v.push(np.arange(n), np.ones(n, "f4"))
    got = v.pull(np.arange(n)[::-1])
    np.testing.assert_array_equal(got, np.full(n, 4, "f4"))
    windows = client.aio._windows.values()
    assert max(w.peak for w in windows) <= WINDOW_CHUNKS * chunk
    served = [client.run(client.aio.request(a, "stats")).args["ops"]
              for a in client.model("v").servers.values()]
    assert sum(ops["pull_rows"] for ops in served) > 100  # it really went in many pieces


def test_fmpair_adjust_whose_reply_is_lost_is_applied_once(behind, fresh_cluster):
    """One FMPair batch through a proxy that loses adjust's reply, and the same batch on a
    plain cluster: the resend gets the remembered reply (a second run would find no cached
    batch and fail), and both models end bit for bit the same."""
    import scipy.sparse as sp
    from models.fmpair import losses
    from models.fmpair.features import FeatureSpace
    from models.fmpair.sampling import NegativeSampler
    train = sp.csr_matrix(np.eye(6, 8, dtype=np.float32) + np.eye(6, 8, 2, dtype=np.float32))
    space = FeatureSpace.build(*train.shape)
    config = {"n_features": space.n_features, "dims": 4, "seed": 7}
    batch = losses.prepare(np.array([0, 1, 2]), np.array([0, 1, 2]), space,
                           NegativeSampler(train), np.random.default_rng(3), 1)
    coefficients = np.float32([[0.5], [-0.25], [1.0]])

    def one_batch(client: Client) -> tuple[np.ndarray, np.ndarray]:
        client.create_model("fm", "fmpair", config)
        every = np.arange(space.n_features)
        start = client.pull_rows("fm", "factors", every)
        client.call("fm", "dotprod", {"key": 1}, batch.arrays, idempotent=True)
        client.call("fm", "adjust", {"key": 1}, (coefficients,), once=True)
        return start, client.pull_rows("fm", "factors", every)
    lossy, proxy = behind(lambda target: ReplyDropper(target, "adjust"))
    start, got = one_batch(lossy)
    assert proxy.dropped == 1 and model_stats(lossy, "fm")["duplicates"] == 1
    _, expected = one_batch(fresh_cluster(1).client())
    assert not np.array_equal(got, start)  # the batch did move the model ...
    assert got.tobytes() == expected.tobytes()  # ... exactly as far as one application
