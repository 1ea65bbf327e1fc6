"""`PureSVD`: PureSVD (Cremonesi et al. 2010) as a pyspark.ml Estimator with ALS's names,
its truncated SVD computed by the randomized SVD on the parameter server
(`models.rsvd.spark_svd`); `PureSVDModel` recommends with ALSModel's API without one.

    from models.rsvd import PureSVD
    model = PureSVD(rank=50, powerIter=3).fit(interactions)   # userCol, itemCol[, ratingCol]
    model.recommendForAllUsers(10)           # r_u · V · Vᵀ, training items left out
    model.transform(pairs)                   # prediction r_u · V · v_i, as ALS

R is the user × item matrix, missing entries 0: without ratingCol, implicit data, every
(user, item) pair seen is a 1 (seen twice, still 1); with ratingCol, the ratings at one
pair add up. R ≈ U·Σ·Vᵀ, and a user's scores are r_u·V·Vᵀ: item factors V (items × rank),
user factors r_u·V, no biases. `fit` checks the params and columns (ids as ALS takes
them, by one aggregation), collapses the rows into one entry per pair, cuts R into row
blocks where Spark holds them (`spark_job.row_blocks`), runs Halko's algorithm over them
(`SparkDecomposition`; U is never read) and one more pass A·V, which gives the
user factors R·V; both come to the driver, as ALSModel's factors do (users × rank and
items × rank floats). The model then needs no parameter server
(`models.spark_recommender.FactorModel`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from pyspark.ml import Estimator
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, functions as F, types as T

from psframework import ConfigError
from psframework.spark import arrow, ml, pin_local_interpreter
from models.rsvd.local import LocalPureSVD, width
from models.rsvd.plugin import LEFT, RIGHT
from models.rsvd.spark_job import row_blocks
from models.rsvd.spark_svd import SparkDecomposition
from models.rsvd.spec import PURESVD_SPEC
from models.spark_estimator import check_columns, id_ranges, spark_jobs
from models.spark_recommender import FactorModel

__all__ = ["PureSVD", "PureSVDModel"]

WHO = "PureSVD.fit"


class _PureSVDParams(ml.ParamValues):
    """The params of PureSVD and PureSVDModel: from `models.rsvd.spec.PURESVD_SPEC`
    (ALS's names)."""

    def _check_columns(self, schema: T.StructType, names: Iterable[str]) -> None:
        kinds = {"userCol": "id", "itemCol": "id", "ratingCol": "number"}
        check_columns(self, schema, {n: kinds[n] for n in names}, "PureSVD")


class PureSVD(Estimator, _PureSVDParams, DefaultParamsWritable, DefaultParamsReadable):
    """PureSVD on the parameter server (docs/rsvd.md): the rank-`rank` truncated SVD of
    the user × item matrix by the randomized SVD (oversample, powerIter, seed)."""

    def _fit(self, dataset: DataFrame) -> "PureSVDModel":
        self._check_spec()
        rating = self._value("ratingCol")
        self._check_columns(dataset.schema, ("userCol", "itemCol")
                            + (("ratingCol",) if rating else ()))
        user, item, rank = self._value("userCol"), self._value("itemCol"), self._value("rank")
        sc = dataset.sparkSession.sparkContext
        pin_local_interpreter(sc)
        with spark_jobs(sc, f"{WHO} reading its interactions"):
            rows, ranges = id_ranges(dataset, {"userCol": user, "itemCol": item}, WHO)
            if rating:
                _check_ratings(dataset, rating)
        user_ids, item_ids = ranges["userCol"], ranges["itemCol"]
        if not rows or user_ids is None or item_ids is None:
            raise ConfigError(f"{WHO}: the DataFrame has no interactions to train on")
        m, n = user_ids[1] + 1, item_ids[1] + 1
        width(rank, self._value("oversample"), (m, n), "rank")  # before any pass
        # one entry per pair seen: implicit 1, or its ratings' sum
        value = F.sum(F.col(rating).cast("double")) if rating else F.lit(1.0)
        pairs = dataset.groupBy(F.col(user).cast("long").alias("row"),
                                F.col(item).cast("long").alias("col")).agg(
            value.alias("value")).persist()
        try:
            count = max(sc.defaultParallelism, 1)
            with spark_jobs(sc, f"{WHO} reading its interactions"):
                rated_users, rated_items = _seen(pairs, m, n)
                # ids and ratings are checked: the pairs go straight into row blocks
                blocks = row_blocks(pairs.where(F.col("value") != 0), count)
            with SparkDecomposition(self, blocks, count, m, n, rank, WHO) as run:
                s = run.decompose()
                V = run.pull(RIGHT)
                run.forward()  # left = A · right: its first rank columns are R·V
                P = run.pull(LEFT)
            blocks.unpersist()
        finally:
            pairs.unpersist()
        state = LocalPureSVD(rank=rank, oversample=self._value("oversample"),
                             power_iter=self._value("powerIter"), seed=self._value("seed"),
                             show_progress=False)
        state.item_factors_, state.user_factors_, state.singular_values_ = V, P, s
        state.history_, state.train_ = run.history, None
        # per user, the items it had in training (left out of its recommendations, and
        # rankCol's candidates): computed when used, as MFSGD's
        users = dataset.groupBy(F.col(user).cast("long").alias("id")).agg(
            F.collect_set(F.col(item).cast("long")).alias("exclude"))
        model = PureSVDModel(state, rated_users, rated_items, users)
        model.history = run.history
        return self._copyValues(model)


def _check_ratings(dataset: DataFrame, rating: str) -> None:
    """A ConfigError naming the column if it holds nulls, NaN or infinities."""
    r = F.col(rating).cast("double")
    bad = dataset.agg(F.count(F.when(r.isNull() | F.isnan(r) | (F.abs(r) == float("inf")),
                                     1))).first()
    if bad is not None and bad[0]:
        raise ConfigError(f"{WHO}: column {rating!r} (ratingCol) holds {bad[0]} null, NaN or "
                          "infinite rating(s); drop or replace them")


def _seen(pairs: DataFrame, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The users and the items with an interaction, as booleans by id (one Spark job)."""
    sides = [pairs.select(F.lit(k).alias("side"), F.col(c).alias("id"))
             for k, c in enumerate(("row", "col"))]
    found = sides[0].unionByName(sides[1]).distinct().toArrow()
    side, ids = arrow.ids(found.column("side")), arrow.ids(found.column("id"))
    seen = (np.zeros(m, bool), np.zeros(n, bool))
    for k in (0, 1):
        seen[k][ids[side == k]] = True
    return seen


class PureSVDModel(FactorModel, _PureSVDParams):
    """A fitted PureSVD: V and the users' R·V in the driver (broadcast to the scoring
    tasks), with ALSModel's API (`models.spark_recommender.FactorModel`): transform's
    prediction is r_u·V·v_i; recommendations leave out the training pairs; userFactors
    and itemFactors are (id, features). Only ids fit saw are known. `singularValues`:
    Σ's diagonal, descending; `history`: per pass over R, its seconds and bytes moved."""

    LOCAL, STATE_FILE = LocalPureSVD, "puresvd.npz"
    EXCLUDE_SEEN, BIAS_COLUMN = True, False

    @property
    def singularValues(self) -> np.ndarray:
        """The rank largest singular values of R, descending."""
        return self._state.singular_values_


ml.declare(_PureSVDParams, PURESVD_SPEC)
ml.keyword_init(PureSVD)
ml.add_accessors(PureSVDModel, ("userCol", "itemCol", "predictionCol", "coldStartStrategy",
                                "rankCol"), setters=True)
