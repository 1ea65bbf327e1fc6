"""The model plugin API.

A model is a subclass of `Model` registered under the entry-point group
`psframework.models`; the entry point's name is the model type users ask for:

    [project.entry-points."psframework.models"]
    fmpair = "models.fmpair.plugin:FMPairPlugin"

The master calls `tables()` to learn what to allocate and where. Each shard makes one
instance per hosted model and runs the methods marked `@udf` when a client calls them
(`Client.call(model, op, ...)`): a UDF gets a `ShardView` of partition `part` of every
table of the model, the request's small `args` and its `arrays`, and returns a reply
`(args, arrays)`. Plugins are only ever imported from installed entry points, never from
code sent over the wire.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, ClassVar, Mapping

from psframework.errors import ConfigError, UnknownModelError
from psframework.storage.table import Partition, TableSpec

__all__ = ["Model", "ShardView", "udf", "model_types", "model_type", "ENTRY_POINT_GROUP",
           "BUILTIN_OPS"]

ENTRY_POINT_GROUP = "psframework.models"

#: Ops every shard answers itself, so a UDF may not take one of these names. The shard
#: builds its dispatch table from this set (op "x" is its method `_x`): a built-in op
#: missing here would not be dispatched at all, never shadow a plugin's op silently.
BUILTIN_OPS = frozenset({
    "ping", "create", "destroy", "pull_rows", "pull_elems", "push_rows", "push_elems",
    "save", "load", "stats", "shutdown", "adopt", "backups", "copy_to", "fill",
})


def udf(fn: Callable | None = None, *, name: str | None = None, threaded: bool = False,
        read: bool = False):
    """Mark a Model method as a server-side op named `name` (default: the method name).

    `threaded=True` runs it on the shard's thread pool instead of the event loop: use it
    for heavy work in GIL-releasing (numba `nogil=True`) kernels, so one shard serves
    other requests and uses more than one core meanwhile.

    `read=True` promises that the op changes nothing on the shard (no table, no state
    of the plugin): it then runs on the partition's primary only. Every other op is a
    write: a replicated partition's backups run it too, with the same arguments, and a
    checkpoint waits for it to finish."""
    def mark(f: Callable) -> Callable:
        f._psf_udf = name or f.__name__  # type: ignore[attr-defined]
        f._psf_threaded = threaded  # type: ignore[attr-defined]
        f._psf_read = read  # type: ignore[attr-defined]
        return f
    return mark(fn) if fn is not None else mark


def _is_combiner(fn: object) -> bool:
    from psframework.storage.aggregate import is_combiner  # numba: only when a plugin has one
    return is_combiner(fn)


class ShardView:
    """Partition `part` of each table of one model, as a UDF on a shard sees it."""

    __slots__ = ("model", "shard", "part", "_tables")

    def __init__(self, model: str, shard: str, part: int, tables: dict[str, Partition]) -> None:
        self.model = model
        self.shard = shard
        self.part = part
        self._tables = tables

    def table(self, name: str) -> Partition:
        try:
            return self._tables[name]
        except KeyError:
            raise UnknownModelError(f"model {self.model!r} has no partition {self.part} of "
                                    f"table {name!r} on this shard", model=self.model,
                                    shard=self.shard) from None

    @property
    def tables(self) -> dict[str, Partition]:
        return dict(self._tables)


class Model:
    """Base class of model plugins; see the module docstring."""

    #: Extra push aggregators: name -> numba-jitted `combine(stored, pushed) -> new`.
    aggregators: ClassVar[dict[str, Callable]] = {}
    #: Collected from `@udf` methods: op name -> function(self, view, args, arrays).
    udfs: ClassVar[dict[str, Callable]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        ops = dict(cls.udfs)
        for attr in vars(cls).values():
            op = getattr(attr, "_psf_udf", None)
            if op is not None:
                if op in BUILTIN_OPS:
                    raise TypeError(f"{cls.__name__}: UDF name {op!r} is a built-in op")
                ops[op] = attr
        cls.udfs = ops
        for name, fn in cls.aggregators.items():
            if not _is_combiner(fn):
                raise TypeError(f"{cls.__name__}.aggregators[{name!r}] must be a numba.njit "
                                "function combine(stored, pushed) -> new")

    def __init__(self, config: Mapping[str, Any]) -> None:
        """Validate `config` (raise ConfigError naming the bad key) and keep it."""
        self.config = dict(config)

    def tables(self) -> list[TableSpec]:
        """The tables to allocate for this model."""
        raise NotImplementedError(f"{type(self).__name__} must implement tables()")

    def on_partition(self, view: ShardView) -> None:
        """Called on a shard once partition `view.part` exists (created or loaded), on the
        shard's thread pool and before any request can reach it: the place to load or
        compile the plugin's kernels (call them on empty arrays), so that no request
        waits for numba on the event loop."""

    def on_destroy(self) -> None:
        """Called on a shard when the model is destroyed: drop caches and state."""


class Tables(Model):
    """The built-in model type `tables`: just the tables listed in its config."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        raw = self.config.get("tables")
        if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
            raise ConfigError("model type 'tables' needs config {'tables': [table, ...]}, "
                              "each table as TableSpec.to_wire() makes it")
        self._tables = [TableSpec.from_wire(t) for t in raw]

    def tables(self) -> list[TableSpec]:
        return self._tables


def model_types() -> dict[str, type[Model] | EntryPoint]:
    """Every installed model type: the built-in `tables` plus registered plugins (their
    entry points, not loaded yet)."""
    found: dict[str, type[Model] | EntryPoint] = {"tables": Tables}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # loaded on demand by model_type()
    return found


def model_type(name: str) -> type[Model]:
    """Load the plugin class registered as `name`, or raise UnknownModelError."""
    found = model_types().get(name)
    if found is None:
        raise UnknownModelError(
            f"no model plugin {name!r} is installed here (known: {sorted(model_types())}); "
            f"install the package that registers it under the entry-point group "
            f"{ENTRY_POINT_GROUP!r} on the master and every shard")
    if isinstance(found, type):
        return found
    cls = found.load()
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise UnknownModelError(f"entry point {name!r} = {found.value} is not a psframework.Model")
    return cls
