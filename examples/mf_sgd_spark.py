"""MF-SGD from Spark: executors train it on the parameter server with Harp-DAAL's model
rotation, then test RMSE (RegressionEvaluator) beside the global-mean baseline, and a few
recommendations with pyspark ALS's schema.

    python examples/mf_sgd_spark.py                           # local[2], integrated mode
    spark-submit --master 'local[2]' examples/mf_sgd_spark.py
    python examples/mf_sgd_spark.py --ps HOST:PORT            # a `psframework serve` cluster
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
import pyarrow as pa
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.sql import SparkSession, functions as F

from models.mf_sgd import MFSGD
from models.synthetic_ratings import make_ratings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master (separate mode)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("models.mf_sgd").setLevel(logging.INFO)  # each epoch's RMSEs, updates/s
    builder = (SparkSession.builder.appName("mf-sgd-example")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2"))
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python; spark-submit sets the master
        builder = builder.master("local[2]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        data = make_ratings(n_users=2000, n_items=1000, ratings_per_user=50, seed=0)
        (users, items, ratings), held_out = data.train, data.test
        df = spark.createDataFrame(pa.table({
            "user": np.concatenate([users, held_out[0]]),
            "item": np.concatenate([items, held_out[1]]),
            "rating": np.concatenate([ratings, held_out[2]]),
            "test": np.arange(users.size + held_out[0].size) >= users.size}))
        train, held = df.where(~F.col("test")), df.where(F.col("test"))
        # the test rows ride along, marked: not trained on, scored after every epoch
        mf = MFSGD(rank=16, maxIter=20, stepSize=0.01, regParam=0.05,
                   validationIndicatorCol="test", coldStartStrategy="drop",
                   parameterServerHost=args.ps)
        model = mf.fit(df)
        evaluator = RegressionEvaluator(labelCol="rating")
        rmse = evaluator.evaluate(model.transform(held))
        mean = train.agg(F.avg("rating")).first()[0]
        baseline = evaluator.evaluate(held.withColumn("prediction", F.lit(mean)))
        print(f"test RMSE {rmse:.4f}  (global mean: {baseline:.4f}, noise: 0.5)")
        model.recommendForAllUsers(5).orderBy("user").show(3, truncate=False)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
