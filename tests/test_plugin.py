"""The model plugin API, proven by a plugin psframework has never heard of
(tests/plugins/psf_testplugin, found only through its own entry point)."""

from __future__ import annotations

import numpy as np
import pytest

from psframework import ConfigError, Model, RemoteError, Settings, UnknownModelError, udf
from psframework.model import BUILTIN_OPS


@pytest.fixture
def scaler(client):
    info = client.create_model("scaler-1", "scaler", {"rows": 50, "cols": 9, "seed": 4})
    yield info
    client.destroy("scaler-1")


def test_plugin_op_runs_on_every_partition(client, scaler):
    assert scaler.type == "scaler" and scaler.parts == 2
    weights = client.matrix("scaler-1", "weights")
    before = weights.to_numpy()
    rows = np.array([3, 7, 49, 0])
    replies = client.call("scaler-1", "scale_rows", {"factor": 3.0}, (rows,), once=True)
    assert [args["part"] for args, _ in replies] == [0, 1]
    expected = before.copy()
    expected[rows] *= 3.0
    # each shard answered for its own columns; together they make the full row sums
    partial = sum(arrays[0] for _, arrays in replies)
    np.testing.assert_allclose(partial, expected[rows].sum(axis=1))
    np.testing.assert_array_equal(weights.to_numpy(), expected)


def test_threaded_op_and_subset_of_partitions(client, scaler):
    """A threaded op runs on the shard's pool when its request's arrays reach
    `inline_below` bytes and inline on the event loop below that; either way it answers
    like numpy."""
    w = client.matrix("scaler-1", "weights").to_numpy()
    limit = Settings().inline_below  # the shards read the same environment
    rng = np.random.default_rng(0)
    for n, pooled in ((-(-limit // 8), True), ((limit - 1) // 8, False)):
        rows = rng.integers(0, 50, size=n)  # int64, 8 bytes a row: at least / just under it
        replies = client.call("scaler-1", "sum_squares", arrays=(rows,))
        for args, _ in replies:
            assert args["thread"].startswith("psf-udf") == pooled, (n, args)
            assert args["on_loop"] != pooled, (n, args)
        np.testing.assert_allclose(sum(a[0] for _, a in replies), (w[rows] ** 2).sum(axis=1))
    (args, (part1,)), = client.call("scaler-1", "sum_squares", parts=[1])
    assert args["part"] == 1 and args["on_loop"]  # no arrays: inline
    both = client.call("scaler-1", "sum_squares")
    np.testing.assert_allclose(both[0][1][0] + both[1][1][0], (w * w).sum(axis=1))
    np.testing.assert_array_equal(part1, both[1][1][0])


def test_plugin_aggregator(client, scaler):
    peaks = client.vector("scaler-1", "peaks")
    pushes = [([1, 1, 2, 40], [0.5, -2.0, 1.0, 3.0]), ([1, 2, 40], [1.5, -0.25, -7.0])]
    expected = np.zeros(50)
    for idx, vals in pushes:
        peaks.push(idx, vals)
        for i, v in zip(idx, vals):  # independent reference: keep the larger magnitude
            if abs(v) > abs(expected[i]):
                expected[i] = v
    np.testing.assert_array_equal(peaks.to_numpy(), expected)


def test_failing_op_fails_only_that_request(client, scaler):
    with pytest.raises(RemoteError, match="ValueError: this op always fails") as e:
        client.call("scaler-1", "explode")
    assert e.value.model == "scaler-1" and e.value.op == "explode"
    assert e.value.shard.startswith("shard-")
    ok = client.call("scaler-1", "scale_rows", {"factor": 1.0}, (np.array([0]),))
    assert len(ok) == 2


def test_unknown_ops_types_and_bad_config(client, scaler):
    with pytest.raises(UnknownModelError, match="scale_rows"):
        client.call("scaler-1", "no_such_op")
    with pytest.raises(UnknownModelError, match="no model plugin 'nonexistent'"):
        client.create_model("x", "nonexistent")
    with pytest.raises(ConfigError, match="config.rows"):
        client.create_model("bad-scaler", "scaler", {"rows": 0, "cols": 3})
    with pytest.raises(UnknownModelError, match="no model named"):
        client.call("missing-model", "scale_rows")


@pytest.mark.parametrize("op", sorted(BUILTIN_OPS))
def test_a_plugin_op_named_like_a_built_in_op_is_refused(op):
    with pytest.raises(TypeError, match=f"UDF name {op!r} is a built-in op"):
        class Shadowing(Model):  # noqa: F841 - refused as it is defined
            @udf(name=op)
            def mine(self, view, args, arrays):
                return {}

    def method(self, view, args, arrays):
        return {}
    method.__name__ = op  # a method named like the op: the default op name is the same
    with pytest.raises(TypeError, match=f"UDF name {op!r} is a built-in op"):
        type("Named", (Model,), {op: udf(method)})


def test_the_built_in_ops_refused_are_the_ops_a_shard_dispatches_itself():
    from psframework.shard.server import Shard
    shard = Shard(Settings())
    try:
        assert set(shard._builtin) == BUILTIN_OPS and "shutdown" in BUILTIN_OPS
        assert all(callable(fn) for fn in shard._builtin.values())
    finally:
        shard._pool.shutdown()
