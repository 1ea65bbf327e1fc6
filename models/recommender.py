"""What the local Python APIs of the recommender models share (LocalFMPair, LocalMFSGD)
beyond every local API's `LocalEstimator`: top-k recommendation in bounded memory."""

from __future__ import annotations

import numpy as np

from models.local_estimator import LocalEstimator
from models.recommend import top_k

__all__ = ["LocalRecommender"]


class LocalRecommender(LocalEstimator):
    """Top-k recommendation for the recommenders' local APIs."""

    def _top_k(self, queries, targets, k: int, unit: str, **kwargs
               ) -> tuple[np.ndarray, np.ndarray]:
        """`models.recommend.top_k`, with a bar over the queries when show_progress."""
        bar = self._bar(len(queries), unit, "recommend")
        try:
            return top_k(queries, targets, k, on_block=bar.update if bar else None, **kwargs)
        finally:
            if bar is not None:
                bar.close()
