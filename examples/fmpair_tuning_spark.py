"""Tuning FMPair from Spark: CrossValidator picks numDims by NDCG@10 on held-out
positives (models.spark_evaluation.RecommendationEvaluator), then the best model is scored on a
test split it never saw.

    python examples/fmpair_tuning_spark.py                    # local[2], an embedded cluster
    python examples/fmpair_tuning_spark.py --ps HOST:PORT     # a `psframework serve` cluster
    spark-submit --master 'local[2]' examples/fmpair_tuning_spark.py

The grid fits a model per numDims per fold, and the best again on all the data: they
all train on one parameter server cluster, an embedded `LocalCluster` unless --ps names
one (an integrated server per fit would also work, at the cost of starting and stopping
shards each time). The estimator's rankCol makes every model's transform rank the
validation rows' items among each user's candidates, which is what the evaluator reads.
See docs/tuning.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import DataFrame, SparkSession

from psframework import LocalCluster
from models.spark_evaluation import METRICS, RecommendationEvaluator
from models.fmpair import FMPair
from models.synthetic import make_synthetic


def pairs(spark: SparkSession, matrix) -> DataFrame:
    coo = matrix.tocoo()
    return spark.createDataFrame(list(zip(coo.row.tolist(), coo.col.tolist())),
                                 "user long, item long")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    builder = (SparkSession.builder.appName("fmpair-tuning")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4"))
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python; spark-submit sets the master
        builder = builder.master("local[2]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    with contextlib.ExitStack() as stack:
        stack.callback(spark.stop)
        master = args.ps or stack.enter_context(LocalCluster(shards=2)).address
        # ten clusters of users and items, little popularity to fall back on
        data = make_synthetic(n_users=600, n_items=400, n_clusters=10, n_artists=10,
                              interactions_per_user=15, popularity_exponent=0.3,
                              noise=0.05, test_fraction=0.2, seed=1)
        train, test = pairs(spark, data.train).cache(), pairs(spark, data.test)
        print(f"{data.n_users} users, {data.n_items} items: {train.count()} training rows, "
              f"{test.count()} test rows")

        fmpair = FMPair(loss="warp", maxIter=10, seed=1, rankCol="rank",
                        parameterServerHost=master)
        grid = ParamGridBuilder().addGrid(fmpair.numDims, [2, 8, 32]).build()
        ndcg = RecommendationEvaluator(metricName="ndcgAtK", k=10)
        cv = CrossValidator(estimator=fmpair, estimatorParamMaps=grid, evaluator=ndcg,
                            numFolds=2, seed=1)
        fitted = cv.fit(train)
        print(f"{'numDims':>8s} {'NDCG@10 (2-fold CV)':>20s}")
        for params, metric in zip(grid, fitted.avgMetrics):
            print(f"{params[fmpair.numDims]:8d} {metric:20.4f}")
        best = fitted.bestModel
        print(f"best numDims: {best.getNumDims()}")

        scored = best.transform(test).cache()  # test items ranked, training items left out
        for name in METRICS:
            value = RecommendationEvaluator(metricName=name, k=10).evaluate(scored)
            print(f"test {name:22s} {value:.4f}")
        if args.ps:
            best.destroy()  # the cluster keeps running; free the model kept there
    return 0


if __name__ == "__main__":
    sys.exit(main())
