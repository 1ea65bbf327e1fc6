"""What the local Python APIs of the recommender models share (LocalFMPair, LocalMFSGD):
running `fit` on the cluster at `master` or on an embedded LocalCluster started and
stopped around it, progress bars, and top-k recommendation in bounded memory."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

import numpy as np

from psframework import LocalCluster, run
from models.recommend import top_k

__all__ = ["LocalRecommender"]

T = TypeVar("T")


class LocalRecommender:
    """Mixin: the estimator has `master`, `num_shards` and `show_progress`."""

    master: str | None
    num_shards: int
    show_progress: bool

    def _on_cluster(self, train: Callable[[str], Awaitable[T]]) -> T:
        """Run `train(master address)` on `master`, or on an embedded cluster."""
        cluster = None
        if self.master is None:
            cluster = LocalCluster(self.num_shards).start()
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

    def _top_k(self, queries, targets, k: int, unit: str, **kwargs
               ) -> tuple[np.ndarray, np.ndarray]:
        """`models.recommend.top_k`, with a bar over the queries when show_progress."""
        bar = self._bar(len(queries), unit, "recommend")
        try:
            return top_k(queries, targets, k, on_block=bar.update if bar else None, **kwargs)
        finally:
            if bar is not None:
                bar.close()
