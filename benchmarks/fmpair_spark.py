"""FMPair through Spark versus the local Python API, on the same data, in one run.

Run (JSON on stdout, progress on stderr):

    python benchmarks/fmpair_spark.py [--quick] [--shards 2] [--reps 5] > fmpair_spark.json

--quick (2k users, 1k items) takes about a minute; the full run (10k users, 5k items,
about 160k training positives) a few minutes on 2 cores.

- local: `LocalFMPair` (embedded LocalCluster with --shards shards, one worker, 2 batches
  in flight).
- spark: `FMPair` on `local[2]` (one task per core) in integrated mode: the master on the
  driver, --shards shards started on executors, the interactions repartitioned by user
  into 2 partitions, one Spark job (a barrier stage) for all epochs, each task building
  its partition's data once and running the same worker loop with 2 batches in flight,
  epoch after epoch. The same epoch count, batch size, dims, loss (BPR), sampler
  (uniform), optimizer (AdaGrad) and step size as local.

For both, `pairs_per_s` is the median over the epochs after the first (warm-up: numba,
connections, Python workers) of positives per second of an epoch; for Spark an epoch's
seconds are the longest task's time for that epoch (the job's scheduling and each task's
set-up come before its first epoch, once). `fit_s` is the whole fit, everything
included (for Spark: the metadata jobs, starting the shards on executors, the job, pulling
the parameters). `precision_at_10` is on the held-out test positives, training items
excluded. `spark_vs_local` = spark pairs/s / local pairs/s.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time

import numpy as np

from common import arguments, log, machine
from models.fmpair import FMPair, LocalFMPair
from models.metrics import precision_at_k
from models.synthetic import make_synthetic

DIMS, BATCH, STEP, IN_FLIGHT = 64, 4096, 0.1, 2


def rate(seconds_and_pairs: list[tuple[float, int]]) -> float:
    rates = [pairs / seconds for seconds, pairs in seconds_and_pairs[1:]]
    return statistics.median(rates)


def main() -> int:
    args = arguments(__doc__, "small data, for CI", "epochs after the warm-up (default 5)")
    reps = args.reps or (3 if args.quick else 5)
    users, items = (2000, 1000) if args.quick else (10_000, 5000)
    data = make_synthetic(n_users=users, n_items=items, seed=0)
    log(f"data: {users} users, {items} items, {data.train.nnz} training positives")
    common = {"epochs": reps + 1, "dims": DIMS, "batch_size": BATCH, "step_size": STEP,
              "loss": "bpr", "sampler": "uniform", "optimizer": "adagrad",
              "batches_in_flight": IN_FLIGHT, "shards": args.shards}

    log("local: LocalFMPair on an embedded cluster")
    started = time.perf_counter()
    local = LocalFMPair(dims=DIMS, epochs=reps + 1, batch_size=BATCH, step_size=STEP,
                        concurrent_batches=IN_FLIGHT, num_shards=args.shards, seed=0
                        ).fit(data.train)
    local_fit = time.perf_counter() - started
    vectors, bias = local.item_representations()
    local_p10 = precision_at_k(local.user_representations() @ vectors.T + bias, data.test,
                               k=10, train=data.train)
    local_rate = rate([(s.seconds, s.pairs) for s in local.history_])
    log(f"  {local_rate:,.0f} pairs/s, precision@10 {local_p10:.4f}")

    log("spark: FMPair on local[2], integrated mode")
    from pyspark.sql import SparkSession
    logging.getLogger("models.fmpair").setLevel(logging.INFO)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spark = (SparkSession.builder.master("local[2]").appName("fmpair-bench")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        coo = data.train.tocoo()
        df = spark.createDataFrame(list(zip(coo.row.tolist(), coo.col.tolist())),
                                   ["user", "item"]).persist()
        df.count()
        started = time.perf_counter()
        model = FMPair(numDims=DIMS, maxIter=reps + 1, batchSize=BATCH, stepSize=STEP,
                       linearReg=0.0, factorsReg=0.0, numConcurrentBatches=IN_FLIGHT,
                       numParameterServers=args.shards, seed=0).fit(df)
        spark_fit = time.perf_counter() - started
        vectors, bias = model.state.item_representations()
        spark_p10 = precision_at_k(model.state.user_representations() @ vectors.T + bias,
                                   data.test, k=10, train=data.train)
        spark_rate = rate([(h["seconds"], h["pairs"]) for h in model.history])
    finally:
        spark.stop()
    log(f"  {spark_rate:,.0f} pairs/s, precision@10 {spark_p10:.4f}")

    print(json.dumps({
        "benchmark": "fmpair_spark", "machine": machine(),
        "config": {"quick": args.quick, "users": users, "items": items,
                   "train_pairs": int(data.train.nnz), "spark_master": "local[2]",
                   "spark_partitions": 2, **common},
        "local": {"pairs_per_s": round(local_rate), "fit_s": round(local_fit, 2),
                  "precision_at_10": round(float(local_p10), 4)},
        "spark": {"pairs_per_s": round(spark_rate), "fit_s": round(spark_fit, 2),
                  "precision_at_10": round(float(spark_p10), 4)},
        "spark_vs_local": round(spark_rate / local_rate, 3),
    }, indent=2))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
