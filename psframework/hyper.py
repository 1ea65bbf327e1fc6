"""A model's hyper-parameters, declared once.

    SPEC = HyperSpec("fmpair",
        Hyper("dims", int, 32, "latent dimensions", low=1, spark="numDims",
              spark_default=150, plugin=True),
        Hyper("loss", str, "bpr", "the loss", choices=("bpr", "warp")),
        ...)

Each `Hyper` is one hyper-parameter: its name in Python (the local API's keyword and
the plugin's config key), its type, default, allowed range or choices and doc, and its
pyspark.ml name (camelCase unless given; `spark=None` keeps it off Spark). From the spec
are derived the plugin's config check (`HyperSpec.config`), the local API's signature and
checks, and the Spark estimator's Params (`psframework.spark.ml.declare`), so a default,
a range or a doc is written in one place. Errors are ConfigErrors naming the
hyper-parameter by the name its caller used.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from psframework.errors import ConfigError

__all__ = ["Hyper", "HyperSpec", "column", "parameter_server", "local_cluster"]

_SAME = object()  # spark_default: the same as default
_KINDS = (int, float, str, bool)


def camel(name: str) -> str:
    """snake_case → camelCase (`step_size` → `stepSize`)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter. `low`/`high` bound numbers (inclusive; `open_low` makes
    low exclusive); `choices` lists the allowed values; `optional` allows None (unset).
    `spark`: the pyspark.ml Param's name ("" derives camelCase; None: not on Spark);
    `spark_default`: the Spark estimator's default where it differs; `local=False`:
    not in the local API (a Spark-only param, such as a column name); `plugin`: part of
    the server-side config the model plugin checks."""

    name: str
    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple | None = None
    optional: bool = False
    spark: str | None = ""
    spark_default: Any = _SAME
    local: bool = True
    plugin: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise TypeError(f"Hyper {self.name}: kind must be one of {_KINDS}")
        if self.spark == "":
            object.__setattr__(self, "spark", camel(self.name))

    @property
    def spark_value(self) -> Any:
        """The Spark estimator's default."""
        return self.default if self.spark_default is _SAME else self.spark_default

    def what(self) -> str:
        """What a valid value is, in words (for errors and docs)."""
        if self.choices is not None:
            said = f"one of {self.choices}"
        elif self.kind is int and self.low == 1 and self.high is None:
            said = "a positive integer"
        else:
            said = {int: "an integer", float: "a number", str: "a string",
                    bool: "True or False"}[self.kind]
            if self.low is not None and self.high is not None:
                said += f" in {'(' if self.open_low else '['}{self.low}, {self.high}]"
            elif self.low is not None:
                said += f" {'>' if self.open_low else '>='} {self.low}"
            elif self.high is not None:
                said += f" <= {self.high}"
        return said + (" (or None)" if self.optional else "")

    def check(self, value: Any, label: str) -> Any:
        """`value` as this hyper-parameter's type (numpy scalars become Python ones,
        an int where a float is wanted becomes a float); a ConfigError naming `label`
        unless it is valid."""
        if value is None and self.optional:
            return None
        ok = False
        if self.kind is bool:
            ok = isinstance(value, (bool, np.bool_))
            value = bool(value) if ok else value
        elif self.kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            value = int(value) if ok else value
        elif self.kind is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.low is not None:
            ok = value > self.low if self.open_low else value >= self.low
        if ok and self.high is not None:
            ok = value <= self.high
        if not ok:
            raise ConfigError(f"{label} must be {self.what()}, got {value!r}")
        return value


class HyperSpec:
    """A model's hyper-parameters, in declaration order."""

    def __init__(self, model: str, *hypers: Hyper) -> None:
        self.model = model
        self._by_name = {h.name: h for h in hypers}
        if len(self._by_name) != len(hypers):
            raise TypeError(f"HyperSpec {model}: duplicate names")

    def __iter__(self) -> Iterator[Hyper]:
        return iter(self._by_name.values())

    def __getitem__(self, name: str) -> Hyper:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def local(self) -> tuple[Hyper, ...]:
        """The hyper-parameters of the local Python API."""
        return tuple(h for h in self if h.local)

    @property
    def spark(self) -> dict[str, Hyper]:
        """The hyper-parameters that are pyspark.ml Params, by Param name."""
        return {h.spark: h for h in self if h.spark}

    def defaults(self) -> dict[str, Any]:
        """The local API's defaults, by Python name."""
        return {h.name: h.default for h in self.local}

    def check(self, values: Mapping[str, Any], who: str) -> dict[str, Any]:
        """Every one of `values` (by Python name) checked and converted; errors read
        "`who` param `name` must be ...". Unknown names are a ConfigError listing the
        known ones."""
        unknown = sorted(set(values) - set(self._by_name))
        if unknown:
            raise ConfigError(f"{who} has no parameter(s) {unknown}; it has "
                              f"{[h.name for h in self.local]}")
        return {name: self[name].check(value, f"{who} param {name}")
                for name, value in values.items()}

    def config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A plugin's config: the plugin hyper-parameters' defaults filled in and every
        one checked ("`model` config.`name` must be ..."); keys that are not
        hyper-parameters (sizes, ...) pass through for the plugin to check."""
        full = {h.name: h.default for h in self if h.plugin}
        full.update(config)
        for h in self:
            if h.plugin:
                full[h.name] = h.check(full[h.name], f"{self.model} config.{h.name}")
        return full

    def plugin_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The plugin's share of `values` (by Python name)."""
        return {h.name: values[h.name] for h in self if h.plugin and h.name in values}

    def signature_doc(self, spark: bool = False) -> str:
        """One line per hyper-parameter of the local API (or, with `spark`, per Spark
        Param): name, default, what is valid and its doc."""
        named = ({n: (h, h.spark_value) for n, h in self.spark.items()} if spark
                 else {h.name: (h, h.default) for h in self.local})
        return "\n".join(f"    {name} (default {default!r}; {h.what()}): {h.doc}"
                         for name, (h, default) in named.items())


def column(name: str, default: str | None, doc: str) -> Hyper:
    """A Spark-only param naming a DataFrame column (optional when it has no default)."""
    return Hyper(name, str, default, doc, optional=default is None, local=False)


def parameter_server(servers: int = 2) -> tuple[Hyper, ...]:
    """Where a Spark estimator's parameter server runs, and how many copies of each
    partition it keeps: in every Spark model's spec."""
    return (
        Hyper("num_parameter_servers", int, servers, "shards started on the executors "
              "(integrated mode)", low=1, local=False),
        Hyper("parameter_server_host", str, None, "HOST:PORT of a running psframework "
              "master (separate mode); unset: integrated mode", optional=True, local=False),
        Hyper("replicas", int, 1, "copies of every partition on the parameter server (2: a "
              "backup on another shard, so that fit survives the loss of a shard)", low=1,
              local=False),
    )


def local_cluster() -> tuple[Hyper, ...]:
    """Where a local estimator trains: in every local model's spec."""
    return (
        Hyper("master", str, None, "HOST:PORT of a running psframework master; None: an "
              "embedded cluster in this process", optional=True, spark=None),
        Hyper("num_shards", int, 2, "shards of the embedded cluster", low=1, spark=None),
    )
