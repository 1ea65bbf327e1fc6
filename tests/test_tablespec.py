"""Table specs: what validation refuses and accepts, and the wire round trip."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psframework.errors import ConfigError
from psframework.storage import TableSpec, init
from psframework.storage.aggregate import BUILTIN as AGGREGATORS
from psframework.storage.table import TABLE_DTYPES
from test_storage import twice_plus  # a plugin's combiner

FEW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


GOOD = dict(name="t", shape=(10, 4))
BAD = [
    dict(name=""), dict(shape=()), dict(shape=(0, 4)), dict(shape=(10, 0)), dict(shape=(-1,)),
    dict(shape=(2, 2, 2)), dict(shape=5), dict(shape=("a", 2)),
    dict(dtype="complex64"), dict(dtype="int8"), dict(dtype="bool"), dict(dtype="flaot32"),
    dict(dtype="f4,,"), dict(dtype={}),
    dict(shape=(10,), partition_by="cols"), dict(partition_by="diagonal"),
    dict(partitioner="hash"), dict(parts=-1), dict(parts=11),
    dict(partition_by="cols", parts=5), dict(aggregate="mean"),
    dict(init={"kind": "xavier"}), dict(init="zeros"), dict(init={}),
    dict(init={"kind": "uniform"}), dict(init={"kind": "normal", "mean": 0.0}),
    dict(init={"kind": "constant", "value": "1"}), dict(init={**init.normal(), "std": -1.0}),
    dict(init={**init.uniform(), "seed": -1}), dict(init={**init.uniform(), "low": float("nan")}),
    dict(init={**init.uniform(), "low": 1.0, "high": -1.0}), dict(init={**init.uniform(), "seed": 2**64}),
    dict(dtype="int32", init=init.constant(2**40)), dict(dtype="int64", init=init.constant(1.5)),
    dict(dtype="float32", init=init.constant(1e300)), dict(shape=(10**6, 4), parts=5000),
    dict(shape=(2**49,)), dict(aggregate=["add"]), dict(parts="2"), dict(allow_nonfinite=1),
]


@pytest.mark.parametrize("make", [lambda: init.uniform(1, -1), lambda: init.normal(0, -1),
                                  lambda: init.constant(float("inf")), lambda: init.uniform(seed=-1)])
def test_initializer_helpers_refuse_bad_values_at_once(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_validate_rejects_bad_specs(bad):
    with pytest.raises(ConfigError):
        TableSpec(**{**GOOD, **bad}).validate()


@pytest.mark.parametrize("ok", [
    dict(), dict(shape=(10,)), dict(partition_by="cols", parts=4), dict(parts=10),
    dict(dtype=np.int64, partitioner="cyclic", aggregate="max"),
    dict(init=init.constant(3)), dict(init=init.normal(0, 0, seed=2**40)),
    dict(dtype="int64", init=init.constant(2**62)), dict(dtype="float32", init=init.constant(0.1)),
    dict(allow_nonfinite=True),
    dict(shape=(10**6, 4), parts=4096),
])
def test_validate_accepts_good_specs(ok):
    spec = TableSpec(**{**GOOD, **ok})
    assert spec.validate() is spec


def test_plugin_aggregators_are_known_only_when_given():
    spec = TableSpec(**GOOD, aggregate="twice_plus")
    with pytest.raises(ConfigError, match="twice_plus"):
        spec.validate()
    assert spec.validate({"twice_plus": twice_plus}) is spec


specs = st.builds(
    TableSpec,
    name=st.text(min_size=1, max_size=10),
    shape=st.one_of(st.tuples(st.integers(3, 10**9)),
                    st.tuples(st.integers(3, 10**6), st.integers(3, 1000))),
    dtype=st.sampled_from(TABLE_DTYPES),
    partitioner=st.sampled_from(["range", "cyclic"]),
    parts=st.integers(0, 3),
    init=st.sampled_from([init.zeros(), init.constant(2), init.uniform(-1, 1, 3),
                          init.normal(0.0, 0.1, 9)]),
    aggregate=st.sampled_from(sorted(AGGREGATORS)),
).flatmap(lambda s: st.sampled_from(["rows", "cols"] if len(s.shape) == 2 else ["rows"]).map(
    lambda by: TableSpec(**{**s.to_wire(), "partition_by": by})))


@FEW
@given(spec=specs)
def test_wire_round_trip(spec):
    spec.validate()
    wire = msgpack.unpackb(msgpack.packb(spec.to_wire()))  # only plain msgpack types
    back = TableSpec.from_wire(wire)
    assert back == spec and back.shape == spec.shape and isinstance(back.shape, tuple)
    assert back.validate() is back
    assert back.placed(2).split() == spec.placed(2).split()


@pytest.mark.parametrize("wire", [{"name": "t"}, {**TableSpec(**GOOD).to_wire(), "colour": 1},
                                  {**TableSpec(**GOOD).to_wire(), "dtype": "nope"}])
def test_from_wire_rejects_garbage(wire):
    with pytest.raises(ConfigError):
        TableSpec.from_wire(wire)
