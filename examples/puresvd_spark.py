"""PureSVD from Spark: the truncated SVD of the user × item matrix by the randomized SVD
on the parameter server, then precision@10 of its recommendations (training items left
out) beside the popularity baseline, on each user's held-out items.

    python examples/puresvd_spark.py                          # local[2], integrated mode
    spark-submit --master 'local[2]' examples/puresvd_spark.py
    python examples/puresvd_spark.py --ps HOST:PORT           # a `psframework serve` cluster

The data is implicit (every interaction a 1; `models.synthetic`): users with latent
tastes (clusters of items) and a power-law item popularity, 20% of each user's items held
out. Each pass over the matrix appears in the driver's log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession

from models.metrics import precision_at_k
from models.rsvd import PureSVD
from models.synthetic import make_synthetic, popularity_scores


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master (separate mode)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("models.rsvd").setLevel(logging.INFO)  # each pass: seconds, MB moved
    builder = (SparkSession.builder.appName("puresvd-example")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2"))
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python; spark-submit sets the master
        builder = builder.master("local[2]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        data = make_synthetic(n_users=3000, n_items=2000, n_clusters=10, seed=0)
        train = data.train.tocoo()
        df = spark.createDataFrame(pa.table({"user": train.row.astype(np.int64),
                                             "item": train.col.astype(np.int64)}))
        print(f"{data.n_users} users, {data.n_items} items: {train.nnz} training and "
              f"{data.test.nnz} held-out interactions")
        model = PureSVD(rank=10, powerIter=2, parameterServerHost=args.ps).fit(df)
        print("singular values:", np.round(model.singularValues, 1))
        # the recommendations, as scores for models.metrics: 10 for the first, 1 for the last
        top = np.full(data.interactions.shape, -np.inf)
        for row in model.recommendForAllUsers(10).collect():
            items = [r.item for r in row.recommendations]
            top[row.user, items] = np.arange(len(items), 0, -1)
        puresvd = precision_at_k(top, data.test, 10, train=data.train)
        popular = precision_at_k(popularity_scores(data.train), data.test, 10, train=data.train)
        print(f"precision@10  PureSVD {puresvd:.4f}   popularity {popular:.4f}")
        model.recommendForAllUsers(3).orderBy("user").show(3, truncate=False)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
