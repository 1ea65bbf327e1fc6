"""Ranking metrics for recommenders inside pyspark.ml tuning (`CrossValidator`,
`TrainValidationSplit`), computed from the ranks the model puts in `transform`'s output.

    from models.spark_evaluation import RecommendationEvaluator
    fmpair = FMPair(numDims=16, rankCol="rank")             # the model's transform ranks
    grid = ParamGridBuilder().addGrid(fmpair.numDims, [8, 32]).build()
    cv = CrossValidator(estimator=fmpair, estimatorParamMaps=grid, numFolds=3,
                        evaluator=RecommendationEvaluator(metricName="ndcgAtK", k=10))

An evaluator only sees `model.transform(validation)`. A recommender fitted with `rankCol`
(FMPairModel, MFSGDModel) adds, for each row (user, item), the item's 1-based rank among
the user's *candidates* — every item the model knows except the user's training items —
by the model's scores, equal scores by lower item id (the order of
`models.recommend.top_k`), and `<rankCol>Candidates`, how many candidates the user has.
The rank is null for a training item of the user, an item the model does not know and a
user it does not know (cold start): such rows are skipped. `candidate_ranks` computes the
ranks on the executors, an Arrow block at a time.

The rows that remain (with `labelCol`: those whose label >= `threshold`) are the user's
held-out positives P, ranked among C candidates; the other candidates are negatives. From
the ranks r_1 < ... < r_|P| alone, per user, as `models.metrics` defines them:

- precisionAtK = hits / k, hits = #{r_j <= k} (always divided by k);
- recallAtK = hits / |P|;
- ndcgAtK = Σ_{r_j <= k} 1 / log2(r_j + 1), divided by the ideal Σ_{i=1}^{min(k,|P|)}
  1 / log2(i + 1);
- meanAveragePrecision = (1/|P|) Σ_j j / r_j: average precision over the whole candidate
  ranking (AP@all), as Spark's RankingEvaluator "meanAveragePrecision" with every
  candidate in the prediction list;
- areaUnderROC = mean over positives of (#negatives ranked below it) / (C - |P|):
  1 - (Σ r_j - |P|(|P|+1)/2) / (|P| (C - |P|)); users without negatives are skipped.
  Ranks are strict (ties by item id), so where scores tie `models.metrics.auc` (ties
  count 1/2) can differ.

The result is the mean over users with at least one ranked positive (NaN if none): Spark
SQL aggregations (a window per user for MAP), one number to the driver.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pyspark import keyword_only
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.param import TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, Window, functions as F, types as T

from psframework import ConfigError
from psframework.spark import ml

__all__ = ["RecommendationEvaluator", "METRICS", "candidate_ranks", "candidates_column",
           "rank_arrays", "rank_fields"]

METRICS = ("precisionAtK", "recallAtK", "ndcgAtK", "meanAveragePrecision", "areaUnderROC")
RANK_MEMORY = 256 * 2**20  # bytes of scores and orders held at once per task


def candidates_column(rank_col: str) -> str:
    """The column holding the user's number of candidates, beside `rank_col`."""
    return f"{rank_col}Candidates"


def rank_fields(rank_col: str) -> list[T.StructField]:
    """The two columns `transform` adds with a rankCol (nullable ints)."""
    return [T.StructField(rank_col, T.IntegerType()),
            T.StructField(candidates_column(rank_col), T.IntegerType())]


def candidate_ranks(queries: np.ndarray, targets: np.ndarray, target_bias: np.ndarray,
                    exclude: sp.csr_matrix, row_query: np.ndarray, row_item: np.ndarray, *,
                    known: np.ndarray | None = None, memory: int = RANK_MEMORY
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For each row t, the 1-based rank of item row_item[t] among the candidates of query
    row_query[t], and that query's number of candidates: (rank, candidates), int64, 0
    where null.

    queries: n × d (one per distinct user of the block); targets: m × d; target_bias: m;
    exclude: n × m sparse, each query's left-out items; known: m booleans, items that may
    be candidates at all (default: every item). Scores are queries @ targets.T +
    target_bias in float64 from the float32 parameters; NaN scores count as -inf, as in
    `top_k`. Each query is scored once against every item and its candidates ordered by
    one stable sort (descending score, equal scores by lower id), `memory` bytes at a
    time. A row's rank is null (0) when row_query is -1 (an unknown user), the item is
    outside [0, m), left out for the query or not known; its candidates null when the
    query is -1."""
    n, m = queries.shape[0], targets.shape[0]
    rows = row_query.size
    rank = np.zeros(rows, np.int64)
    count = np.zeros(rows, np.int64)
    asked = np.flatnonzero(row_query >= 0)
    if not asked.size or m == 0:
        return rank, count
    t = np.asarray(targets, np.float64).T
    bias = np.asarray(target_bias, np.float64)
    exclude = sp.csr_matrix(exclude)
    asked = asked[np.argsort(row_query[asked], kind="stable")]
    bounds = np.searchsorted(row_query[asked], np.arange(n + 1))
    step = max(1, int(memory) // (32 * m))  # scores, keys, order, positions: 8 B each
    for start in range(0, n, step):
        stop = min(start + step, n)
        scores = np.asarray(queries[start:stop], np.float64) @ t + bias
        key = -np.where(np.isnan(scores), -np.inf, scores)
        ex = exclude[start:stop].tocoo()
        key[ex.row, ex.col] = np.nan  # left out: NaN sorts after every score
        if known is not None:
            key[:, ~known] = np.nan
        order = np.argsort(key, axis=1, kind="stable")
        position = np.empty_like(order)
        np.put_along_axis(position, order, np.arange(m)[None, :], axis=1)
        these = asked[bounds[start]:bounds[stop]]
        q, item = row_query[these] - start, row_item[these]
        count[these] = (~np.isnan(key)).sum(axis=1)[q]
        inside = (item >= 0) & (item < m)
        ok = np.zeros(these.size, bool)
        ok[inside] = ~np.isnan(key[q[inside], item[inside]])
        rank[these[ok]] = position[q[ok], item[ok]] + 1
    return rank, count


def rank_arrays(rank: np.ndarray, count: np.ndarray) -> list:
    """`candidate_ranks`' answer as the two nullable int columns of `rank_fields`."""
    import pyarrow as pa
    return [pa.array(rank.astype(np.int32), mask=rank == 0),
            pa.array(count.astype(np.int32), mask=count == 0)]


class RecommendationEvaluator(Evaluator, DefaultParamsWritable, DefaultParamsReadable):
    """Ranking metrics of a recommender from `transform`'s rank column (see the module
    docstring for the definitions): precisionAtK, recallAtK, ndcgAtK,
    meanAveragePrecision, areaUnderROC. Larger is better for all of them."""

    metricName = ml.param("metricName", f"metric to compute, one of {METRICS}",
                          TypeConverters.toString)
    k = ml.param("k", "cut-off of the @k metrics (> 0)", TypeConverters.toInt)
    userCol = ml.param("userCol", "column of user ids: metrics are averaged over users",
                       TypeConverters.toString)
    rankCol = ml.param("rankCol", "column of the item's rank among the user's candidates, "
                       "added by a recommender's transform when its rankCol is set; "
                       "<rankCol>Candidates beside it", TypeConverters.toString)
    labelCol = ml.param("labelCol", "optional column of labels: rows whose label >= "
                        "threshold are the held-out positives; unset: every row",
                        TypeConverters.toString)
    threshold = ml.param("threshold", "rows whose labelCol >= threshold are positives",
                         TypeConverters.toFloat)
    _input_kwargs: dict[str, Any]  # set by pyspark's @keyword_only, as its own classes declare

    @keyword_only
    def __init__(self, *, metricName: str = "ndcgAtK", k: int = 10, userCol: str = "user",
                 rankCol: str = "rank", labelCol: str | None = None,
                 threshold: float = 1.0) -> None:
        super().__init__()
        self._setDefault(metricName="ndcgAtK", k=10, userCol="user", rankCol="rank",
                         threshold=1.0)
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, metricName: str = "ndcgAtK", k: int = 10, userCol: str = "user",
                  rankCol: str = "rank", labelCol: str | None = None,
                  threshold: float = 1.0) -> "RecommendationEvaluator":
        """Set params by keyword; returns self."""
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def _value(self, name: str) -> Any:
        p = self.getParam(name)
        return self.getOrDefault(p) if self.isDefined(p) else None

    def isLargerBetter(self) -> bool:
        return True

    def _check(self, dataset: DataFrame) -> None:
        name, k = self._value("metricName"), self._value("k")
        if name not in METRICS:
            raise ConfigError(f"RecommendationEvaluator param metricName must be one of "
                              f"{METRICS}, got {name!r}")
        if k < 1:
            raise ConfigError(f"RecommendationEvaluator param k must be a positive integer, "
                              f"got {k!r}")
        columns = set(dataset.columns)
        rank = self._value("rankCol")
        if rank not in columns or candidates_column(rank) not in columns:
            raise ConfigError(
                f"RecommendationEvaluator needs the rank column {rank!r} and "
                f"{candidates_column(rank)!r} in the dataset (it has {sorted(columns)}): "
                f"set rankCol on the estimator, e.g. FMPair(rankCol={rank!r}) or "
                f"MFSGD(rankCol={rank!r}), or on the fitted model, so that its transform "
                "adds them")
        for param in ("userCol", "labelCol"):
            column = self._value(param)
            if column is not None and column not in columns:
                raise ConfigError(f"RecommendationEvaluator param {param}: column {column!r} "
                                  f"is not in the dataset (it has {sorted(columns)})")

    def _evaluate(self, dataset: DataFrame) -> float:
        self._check(dataset)
        name, k = self._value("metricName"), self._value("k")
        rank = self._value("rankCol")
        label = self._value("labelCol")
        rows = dataset.where(F.col(rank).isNotNull())
        if label is not None:
            rows = rows.where(F.col(label) >= F.lit(self._value("threshold")))
        # ranks are distinct per user, so (user, rank) is one held-out positive
        rows = rows.select(F.col(self._value("userCol")).alias("u"),
                           F.col(rank).cast("long").alias("r"),
                           F.col(candidates_column(rank)).cast("long").alias("c")).distinct()
        r, top = F.col("r"), F.col("r") <= F.lit(k)
        aggs = [F.count(F.lit(1)).alias("p"), F.max("c").alias("c")]
        if name == "meanAveragePrecision":
            j = F.row_number().over(Window.partitionBy("u").orderBy("r"))
            rows = rows.withColumn("j", j)
            aggs.append(F.sum(F.col("j") / r).alias("s"))
        elif name == "ndcgAtK":
            aggs.append(F.sum(F.when(top, 1.0 / F.log2(r + 1)).otherwise(0.0)).alias("s"))
        elif name == "areaUnderROC":
            aggs.append(F.sum(r.cast("double")).alias("s"))
        else:
            aggs.append(F.sum(top.cast("double")).alias("s"))
        users = rows.groupBy("u").agg(*aggs)
        p, c, s = F.col("p").cast("double"), F.col("c").cast("double"), F.col("s")
        if name == "precisionAtK":
            metric = s / F.lit(float(k))
        elif name == "recallAtK":
            metric = s / p
        elif name == "ndcgAtK":
            ideal = F.aggregate(F.sequence(F.lit(1), F.least(F.col("p").cast("int"),
                                                              F.lit(k))),
                                F.lit(0.0), lambda acc, i: acc + 1.0 / F.log2(i + 1))
            metric = s / ideal
        elif name == "meanAveragePrecision":
            metric = s / p
        else:
            negatives = c - p
            metric = F.when(negatives > 0,
                            1.0 - (s - p * (p + 1) / 2.0) / (p * negatives))
        row = users.select(F.avg(metric)).first()
        assert row is not None  # an aggregation has one row
        value = row[0]
        return math.nan if value is None else float(value)


ml.add_accessors(RecommendationEvaluator, ml.param_names(RecommendationEvaluator),
                 setters=True)
