"""pyspark.ml plumbing that every PS model's estimator needs: params with getters and
setters as pyspark.ml classes have them, and a fitted model's arrays saved beside
pyspark.ml's metadata (`ModelWriter`, `ModelReader`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from psframework.errors import ConfigError

__all__ = ["param", "ParamValues", "add_accessors", "copy_setters", "data_dir", "param_names",
           "ModelWriter", "ModelReader"]


def param(name: str, doc: str, converter: Callable) -> Param:
    """A class-level Param, as pyspark.ml declares them."""
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class ParamValues(Params):
    """Params with `_value(name)`: the value, or None when an optional one is unset, and
    checks whose errors name the param; and the three that every PS estimator has: where
    its parameter server runs (numParameterServers, parameterServerHost) and how many
    copies of each partition it keeps (replicas)."""

    def _value(self, name: str) -> Any:
        p = self.getParam(name)
        return self.getOrDefault(p) if self.isDefined(p) else None

    def _need(self, ok: bool, name: str, what: str) -> None:
        """A ConfigError naming the param and its value, unless `ok`."""
        if not ok:
            raise ConfigError(f"{type(self).__name__} param {name} must be {what}, got "
                              f"{self._value(name)!r}")

    def _need_counts(self, names: Iterable[str]) -> None:
        for name in names:
            self._need(self._value(name) >= 1, name, "a positive integer")

    numParameterServers = param("numParameterServers", "shards started on the executors "
                                "(integrated mode)", TypeConverters.toInt)
    parameterServerHost = param("parameterServerHost", "HOST:PORT of a running psframework "
                                "master (separate mode); unset: integrated mode",
                                TypeConverters.toString)

    replicas = param("replicas", "copies of every partition on the parameter server (2: a "
                     "backup on another shard, so that fit survives the loss of a shard)",
                     TypeConverters.toInt)

    def _need_host(self) -> None:
        """parameterServerHost, if set, is HOST:PORT."""
        host = self._value("parameterServerHost")
        port = (host or "").rpartition(":")[2]
        self._need(host is None or (port.isdigit() and 0 < int(port) < 65536),
                   "parameterServerHost", "HOST:PORT of a psframework master")


def param_names(cls: type) -> list[str]:
    """The names of the Params a class declares or inherits."""
    return sorted({p.name for klass in cls.__mro__ for p in vars(klass).values()
                   if isinstance(p, Param)})


def add_accessors(cls: type, names: Iterable[str], setters: bool) -> None:
    """getX() for every param in `names` (None for an optional one left unset) and, if
    `setters`, setX(value) returning self."""
    for name in names:
        cap = name[0].upper() + name[1:]

        def get(self, _name=name):
            return self._value(_name)

        def set_(self, value, _name=name):
            return self._set(**{_name: value})
        get.__name__, get.__doc__ = f"get{cap}", f"The value of {name}."
        set_.__name__, set_.__doc__ = f"set{cap}", f"Set {name}; returns self."
        setattr(cls, get.__name__, get)
        if setters:
            setattr(cls, set_.__name__, set_)


def copy_setters(target: type, source: type, names: Iterable[str]) -> None:
    """source's setX for each of `names`, on target too (a fitted model keeps the
    setters of its output columns)."""
    for name in names:
        setter = f"set{name[0].upper()}{name[1:]}"
        setattr(target, setter, getattr(source, setter))


def data_dir(path: str, what: str) -> Path:
    """Where a model's arrays go: `path/data`, beside Spark's metadata, on a local or
    mounted path."""
    if "://" in path and not path.startswith("file://"):
        raise ConfigError(f"{what} saves to local or mounted paths, not {path!r}")
    return Path(path.removeprefix("file://")) / "data"


class ModelWriter(MLWriter):
    """Writes pyspark.ml's metadata of `instance` (plus `extra`) and then calls
    `save(instance, data_dir)` to write its arrays under `path/data`."""

    def __init__(self, instance: Any, save: Callable[[Any, Path], None],
                 extra: dict | None = None) -> None:
        super().__init__()
        self.instance, self.save_data, self.extra = instance, save, extra or {}

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc,
                                         extraMetadata=self.extra)
        data = data_dir(path, type(self.instance).__name__)
        data.mkdir(parents=True, exist_ok=True)
        self.save_data(self.instance, data)


class ModelReader(MLReader):
    """Reads what `ModelWriter` wrote: `build(metadata, data_dir, reader)` makes the
    model from its arrays, then its uid and params are those saved."""

    def __init__(self, cls: type, build: Callable[[dict, Path, MLReader], Any]) -> None:
        super().__init__()
        self.cls, self.build = cls, build

    def load(self, path: str) -> Any:
        meta = DefaultParamsReader.loadMetadata(path, self.sc)
        model = self.build(meta, data_dir(path, self.cls.__name__), self)
        model._resetUid(meta["uid"])  # as DefaultParamsReader does: params keep their owner
        DefaultParamsReader.getAndSetParams(model, meta)
        return model
