"""pyspark.ml plumbing that every PS model's estimator needs: Params, with getters and
setters as pyspark.ml classes have them, derived from the model's `HyperSpec` (`declare`;
`keyword_init` makes the keyword-only `__init__`/`setParams`), and a fitted model's
arrays saved beside pyspark.ml's metadata (`ModelWriter`, `ModelReader`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Iterable

from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from psframework.errors import ConfigError
from psframework.hyper import HyperSpec

__all__ = ["param", "ParamValues", "add_accessors", "data_dir", "param_names",
           "ModelWriter", "ModelReader", "declare", "keyword_init"]

_CONVERTERS = {int: TypeConverters.toInt, float: TypeConverters.toFloat,
               str: TypeConverters.toString, bool: TypeConverters.toBoolean}


def param(name: str, doc: str, converter: Callable) -> Param:
    """A class-level Param, as pyspark.ml declares them."""
    return Param(Params._dummy(), name, doc, typeConverter=converter)


def declare(cls: type[ParamValues], spec: HyperSpec) -> None:
    """A Param on `cls` (a ParamValues subclass) for every Spark hyper-parameter of
    `spec`, documented with what is valid, and its getter; the defaults are set and the
    values checked by ParamValues from the same spec."""
    cls._spec = spec
    for name, h in spec.spark.items():
        setattr(cls, name, param(name, f"{h.doc} ({h.what()})", _CONVERTERS[h.kind]))
    add_accessors(cls, spec.spark, setters=False)


def keyword_init(cls: type[ParamValues], setters: bool = True) -> None:
    """pyspark.ml's keyword-only `__init__(**params)` and `setParams(**params)` (and
    setX for every param, if `setters`) on an Estimator whose Params come from a spec:
    their signatures list every Spark hyper-parameter with its default, for help() and
    IDEs."""
    spec = cls._spec
    if spec is None:
        raise TypeError(f"{cls.__name__}: declare() its spec before keyword_init()")
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=h.spark_value,
                             annotation=h.kind if not h.optional else f"{h.kind.__name__} | None")
           for name, h in spec.spark.items()])

    @keyword_only
    def __init__(self, **params: Any) -> None:
        super(cls, self).__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **params: Any) -> Any:
        """Set params by keyword; returns self."""
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})
    for f in (__init__, setParams):
        setattr(f, "__signature__", signature)
        f.__qualname__ = f"{cls.__name__}.{f.__name__}"
    __init__.__doc__ = (f"{cls.__doc__ or cls.__name__}\n\nParams:\n"
                        + spec.signature_doc(spark=True))
    setattr(cls, "__init__", __init__)
    setattr(cls, "setParams", setParams)
    if setters:
        add_accessors(cls, spec.spark, setters=True)


class ParamValues(Params):
    """Params declared from a model's spec (`declare`; every PS estimator's spec has
    `psframework.hyper.parameter_server()`: numParameterServers, parameterServerHost,
    replicas), with `_value(name)`: the value, or None when an optional one is unset,
    and checks whose errors name the param. A subclass may hide a declared Param under
    another attribute (a fitted model's read-only `rank`): that one is not its param."""

    _spec: HyperSpec | None = None  # set by `declare`

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if self._spec is not None:
            self._setDefault(**{name: h.spark_value for name, h in self._spec.spark.items()
                                if h.spark_value is not None and self.hasParam(name)})

    def _value(self, name: str) -> Any:
        p = self.getParam(name)
        return self.getOrDefault(p) if self.isDefined(p) else None

    def _check_spec(self) -> None:
        """Every param the spec declares holds a valid value; errors name the param."""
        for name, h in (self._spec.spark if self._spec else {}).items():
            if self.hasParam(name):
                h.check(self._value(name), f"{type(self).__name__} param {name}")
        self._need_host()

    def _need(self, ok: bool, name: str, what: str) -> None:
        """A ConfigError naming the param and its value, unless `ok`."""
        if not ok:
            raise ConfigError(f"{type(self).__name__} param {name} must be {what}, got "
                              f"{self._value(name)!r}")

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
    model from its arrays, then its uid and params are those saved (but a param the
    class no longer has, such as MFSGDModel's `rank`, now a read-only property, which
    models saved before kept)."""

    def __init__(self, cls: type, build: Callable[[dict, Path, MLReader], Any]) -> None:
        super().__init__()
        self.cls, self.build = cls, build

    def load(self, path: str) -> Any:
        meta = DefaultParamsReader.loadMetadata(path, self.sc)
        model = self.build(meta, data_dir(path, self.cls.__name__), self)
        model._resetUid(meta["uid"])  # as DefaultParamsReader does: params keep their owner
        for section in ("paramMap", "defaultParamMap"):
            meta[section] = {k: v for k, v in meta.get(section, {}).items()
                             if model.hasParam(k)}
        DefaultParamsReader.getAndSetParams(model, meta)
        return model
