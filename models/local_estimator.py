"""What every model's local Python API shares (LocalFMPair, LocalMFSGD, LocalPA): a
keyword-only `__init__` derived from the model's `HyperSpec` (its signature lists every
hyper-parameter with its default), scikit-learn's get_params / set_params, checks that
name the culprit, running work on the cluster at `master` or on an embedded
LocalCluster, and progress bars."""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, TypeVar

from psframework import ConfigError, LocalCluster, run
from psframework import HyperSpec

__all__ = ["LocalEstimator"]

T = TypeVar("T")


class LocalEstimator:
    """Base of the local APIs. A subclass sets SPEC (its hyper-parameters, with
    `psframework.hyper.local_cluster()` among them); `__init__` takes each by keyword,
    plus show_progress (a tqdm bar and the loss while training, as implicit) and
    callback. Values are checked at `fit` (as scikit-learn does), by `_validate`."""

    SPEC: HyperSpec
    master: str | None
    num_shards: int
    show_progress: bool
    callback: Callable[..., Any] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "SPEC" not in cls.__dict__:
            return
        kw = inspect.Parameter.KEYWORD_ONLY
        signature = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
            + [inspect.Parameter(h.name, kw, default=h.default) for h in cls.SPEC.local]
            + [inspect.Parameter("show_progress", kw, default=True),
               inspect.Parameter("callback", kw, default=None)])

        def __init__(self: LocalEstimator, **params: Any) -> None:
            LocalEstimator.__init__(self, **params)
        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__name__}.__init__"
        __init__.__doc__ = (f"{cls.__name__}(**hyper-parameters), all keyword-only:\n"
                            + cls.SPEC.signature_doc()
                            + "\n    show_progress (default True): a progress bar with the"
                            " loss and throughput\n    callback (default None): called "
                            "after every epoch")
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, **params: Any) -> None:
        self.show_progress, self.callback = True, None
        for name, value in self.SPEC.defaults().items():
            setattr(self, name, value)
        self.set_params(**params)

    @property
    def PARAMS(self) -> tuple[str, ...]:
        """The hyper-parameters' names."""
        return tuple(h.name for h in self.SPEC.local)

    def get_params(self, deep: bool = True) -> dict:
        """The hyper-parameters (scikit-learn's name), without progress and callback."""
        return {p: getattr(self, p) for p in self.PARAMS}

    def set_params(self, **params: Any) -> "LocalEstimator":
        """Set hyper-parameters by name (scikit-learn's name); returns self. Checked at
        fit."""
        unknown = sorted(set(params) - set(self.PARAMS) - {"show_progress", "callback"})
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no parameter(s) {unknown}; "
                              f"it has {list(self.PARAMS)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _validate(self) -> None:
        """Every hyper-parameter valid (ConfigError naming it), converted to its type."""
        for name, value in self.SPEC.check(self.get_params(), type(self).__name__).items():
            setattr(self, name, value)

    def _embedded(self) -> LocalCluster:
        """The cluster a local estimator starts when it has no `master`: its servers are
        threads of this process (milliseconds to start, this process's kernels)."""
        return LocalCluster(self.num_shards, processes=False).start()

    def _on_cluster(self, train: Callable[[str], Awaitable[T]]) -> T:
        """Run `train(master address)` on `master`, or on an embedded cluster."""
        if self.master is not None:
            return run(train(self.master))
        cluster = self._embedded()
        try:
            return run(train(cluster.address))
        finally:
            cluster.stop()

    def _bar(self, total: int, unit: str, desc: str) -> Any:
        """A tqdm bar when show_progress, else None."""
        if not self.show_progress:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, unit=unit, desc=desc)
