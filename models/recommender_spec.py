"""The Spark params every recommender's spec shares (FMPair's, MF-SGD's): how transform
treats ids fit never saw, and the rank column `models.spark_evaluation` scores."""

from __future__ import annotations

from psframework import Hyper, hyper

__all__ = ["COLD_START", "scoring"]

COLD_START = ("nan", "drop")  # ALS's coldStartStrategy: unknown ids predict NaN, or drop


def scoring(candidates: str) -> tuple[Hyper, ...]:
    """coldStartStrategy and rankCol; `candidates` says which items a user's rank is
    among, besides its training items."""
    return (
        Hyper("cold_start_strategy", str, "nan", "unknown ids in transform: 'nan' predicts "
              "NaN, 'drop' drops the row (as ALS)", choices=COLD_START, local=False),
        hyper.column("rank_col", None, "optional: transform adds each row's item rank among "
                     f"the user's candidates ({candidates} other than its training items; "
                     "null for those and unknown ids) in this column, and their number in "
                     "<rankCol>Candidates; unset: neither (for "
                     "models.spark_evaluation.RecommendationEvaluator)"),
    )
