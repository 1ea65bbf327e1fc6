"""FMPair from Spark: Spark executors train it on the parameter server, then the model
recommends for every user with pyspark ALS's output schema.

    python examples/fmpair_spark.py                           # local[4], integrated mode
    spark-submit --master 'local[4]' examples/fmpair_spark.py
    python examples/fmpair_spark.py --ps HOST:PORT            # a `psframework serve` cluster

Integrated mode (the default) starts the master on the driver and two shards on the
executors for the length of fit(); the fitted model needs no parameter server. Epoch
loss and pairs/s appear in the driver's log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
from pyspark.ml.linalg import SparseVector
from pyspark.sql import DataFrame, SparkSession

from models.fmpair import FMPair
from models.metrics import evaluate
from models.synthetic import make_synthetic, popularity_scores


def interactions(spark: SparkSession, data) -> DataFrame:
    """One row per training interaction: user, item, the item's artist (for sampling)
    and its features (identity one-hot + artist one-hot) as a SparseVector."""
    features = data.item_features().tocsr()
    width = features.shape[1]
    coo = data.train.tocoo()
    rows = [(int(u), int(i), int(data.item_artist[i]),
             SparseVector(width, features[i].indices.tolist(), features[i].data.tolist()))
            for u, i in zip(coo.row, coo.col)]
    return spark.createDataFrame(rows, ["user", "item", "artist", "item_features"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master (separate mode)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("models.fmpair").setLevel(logging.INFO)  # epoch, loss, pairs/s

    builder = (SparkSession.builder.appName("fmpair-example")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4"))
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python; spark-submit sets the master
        builder = builder.master("local[4]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        data = make_synthetic(n_users=2000, n_items=1500, n_artists=150, seed=1)
        df = interactions(spark, data)
        print(f"{data.n_users} users, {data.n_items} items: {df.count()} training rows")

        fmpair = FMPair(numDims=32, loss="warp", maxIter=8, stepSize=0.1, seed=1,
                        itemfeaturesCol="item_features", samplingCol="artist",
                        numParameterServers=2, parameterServerHost=args.ps)
        model = fmpair.fit(df)
        if args.ps:
            model.destroy()  # the separate cluster keeps running; free our model on it

        recs = model.recommendForAllUsers(10)
        recs.orderBy("user").show(3, truncate=False)

        # the model's factors as numpy scores, for the test split's metrics
        vectors = np.array([r.features for r in model.itemFactors.orderBy("id").collect()])
        bias = np.array([r.bias for r in model.itemFactors.orderBy("id").collect()])
        reps = np.array([r.features for r in model.userFactors.orderBy("id").collect()])
        fmpair_scores = lambda u: reps[u] @ vectors.T + bias  # noqa: E731
        print(f"{'test, training items excluded':28s} {'precision@10':>12s} {'AUC':>7s}")
        for name, scores in (("FMPair through Spark", fmpair_scores),
                             ("popularity", popularity_scores(data.train))):
            m = evaluate(scores, data.test, train=data.train, k=10)
            print(f"{name:28s} {m['precision@10']:12.3f} {m['auc']:7.3f}")
        print(f"recommended for {recs.count()} users; "
              f"{model.history[-1]['pairs'] / model.history[-1]['seconds']:,.0f} pairs/s "
              "in the last epoch")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
