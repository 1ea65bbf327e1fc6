"""What every model's local Python API shares (LocalFMPair, LocalMFSGD, LocalPA):
scikit-learn's get_params / set_params, hyper-parameter checks that name the culprit,
running work on the cluster at `master` or on an embedded LocalCluster, and progress
bars."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, TypeVar

import numpy as np

from psframework import ConfigError, LocalCluster, run

__all__ = ["LocalEstimator"]

T = TypeVar("T")


class LocalEstimator:
    """Mixin: the estimator has `master`, `num_shards`, `show_progress`, and its
    hyper-parameters' names in PARAMS."""

    PARAMS: tuple[str, ...] = ()
    master: str | None
    num_shards: int
    show_progress: bool

    def get_params(self, deep: bool = True) -> dict:
        """The hyper-parameters (scikit-learn's name), without progress and callback."""
        return {p: getattr(self, p) for p in self.PARAMS}

    def set_params(self, **params: Any) -> "LocalEstimator":
        """Set hyper-parameters by name (scikit-learn's name); returns self."""
        unknown = sorted(set(params) - set(self.PARAMS) - {"show_progress", "callback"})
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no parameter(s) {unknown}; "
                              f"it has {list(self.PARAMS)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _need(self, ok: bool, name: str, what: str) -> None:
        """ConfigError naming the hyper-parameter, unless `ok`."""
        if not ok:
            raise ConfigError(f"{name} must be {what}, got {getattr(self, name)!r}")

    def _need_counts(self, names: Iterable[str]) -> None:
        """Each of `names` is a positive integer (numpy's too; not a bool)."""
        for name in names:
            value = getattr(self, name)
            self._need(isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                       and value >= 1, name, "a positive integer")

    def _embedded(self) -> LocalCluster:
        """The cluster a local estimator starts when it has no `master`: its servers are
        threads of this process (milliseconds to start, this process's kernels)."""
        return LocalCluster(self.num_shards, processes=False).start()

    def _on_cluster(self, train: Callable[[str], Awaitable[T]]) -> T:
        """Run `train(master address)` on `master`, or on an embedded cluster."""
        cluster = None
        if self.master is None:
            cluster = self._embedded()
        try:
            return run(train(cluster.address if cluster is not None else self.master))
        finally:
            if cluster is not None:
                cluster.stop()

    def _bar(self, total: int, unit: str, desc: str) -> Any:
        """A tqdm bar when show_progress, else None."""
        if not self.show_progress:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, unit=unit, desc=desc)
