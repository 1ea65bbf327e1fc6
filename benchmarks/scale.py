"""FMPair at scale: recommend-for-all beside the GEMM bound, and a Spark fit, with memory.

Run (JSON on stdout, progress on stderr):

    cd benchmarks && python scale.py [--quick] [--shards 2] [--reps 1] > scale.json

--quick (recommend 20k users × 20k items; fit 50k users × 10k items) takes under a
minute on 2 cores, for CI; the full run (recommend 200k × 200k; fit 1M users × 200k
items with 10M interactions) takes 10+ minutes.

recommend: a model built without training (random float32 factors for one-hot users
and items, dims 64, ~20 random training items per user), top 10 for every user.
- gemm_s: the float32 GEMM that `models.recommend.top_k` does, alone: every block of
  `block_rows(items)` users times all items into one reused buffer (the whole product
  would not fit in memory). gemm_gflops = 2 · users · items · dims / gemm_s.
- local: `LocalFMPair.recommend(k=10)` for all users, training items left out.
  ratio_to_gemm = gemm_s / recommend_s (1.0 would be the GEMM alone). rss_before_mb is
  this process's RSS once the model is built, peak_rss_mb the peak during recommend
  (sampled every 20 ms), beyond_model_mb their difference. sample: the first 200 users
  against a dense numpy reference (stable argsort of their full score rows):
  id_rows_equal is the fraction of identical id rows, max_abs_score_diff compares the
  scores rank by rank.
- spark: `FMPairModel.recommendForAllUsers(10)` on local[2], written to the noop sink
  (all work done, nothing collected), its users DataFrame (id, exclude) persisted in 2
  partitions beforehand. peak_rss_mb per process kind, sampled every 100 ms: driver (this
  Python process), jvm, python_workers (Spark's Python daemon and workers, summed). RSS
  sums count pages shared by forked workers once per process. sample: the first 200
  users through the same model, compared with local (ids equal, scores to 1e-5).

fit: `FMPair(...).fit` on local[2], integrated mode (--shards parameter servers), one
epoch, dims 64, batches of 4096, 2 in flight, BPR, uniform sampler, over interactions
drawn on Spark (uniform users, items skewed toward low ids). small and large differ only
in the number of interactions. fit_s is the whole fit (metadata aggregations, servers
started and stopped, parameters pulled to the driver); epoch_s and pairs_per_s are the
epoch's job as the driver timed it (`model.history`). peak_rss_mb as above, plus
ps_master and ps_shards (summed) for the psframework servers.
driver_peak_ratio_large_vs_small: the driver's peak at large over small (flat is 1.0).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from typing import Callable

import numpy as np
import scipy.sparse as sp

from common import SPARK_CONF as SPARK_DEFAULTS, arguments, log, machine, spark_session
from procs import MB, Peaks, own_rss, tree_rss
from models.fmpair import FMPair, LocalFMPair
from models.fmpair import FMPairModel
from models.fmpair.features import FeatureSpace
from models.recommend import DEFAULT_MEMORY, block_rows

DIMS, TOP, PER_USER, SAMPLE = 64, 10, 20, 200
SPARK_CONF = {**SPARK_DEFAULTS,
              "spark.driver.memory": "4g"}  # local mode: the JVM is driver and executor
FIT = {"maxIter": 1, "numDims": DIMS, "batchSize": 4096, "numConcurrentBatches": 2,
       "loss": "bpr", "sampler": "uniform"}


# -- recommend ----------------------------------------------------------------------------
def build_model(n_users: int, n_items: int) -> LocalFMPair:
    """A LocalFMPair as fit would leave it, with random parameters and training items."""
    rng = np.random.default_rng(0)
    n = n_users + n_items
    model = LocalFMPair(dims=DIMS, show_progress=False)
    model.factors_ = rng.standard_normal((n, DIMS), dtype=np.float32) * np.float32(0.1)
    model.linear_ = rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)
    model.space_ = FeatureSpace(sp.identity(n_users, np.float32, format="csr"),
                                sp.identity(n_items, np.float32, format="csr"))
    rows = np.repeat(np.arange(n_users), PER_USER)
    cols = rng.integers(0, n_items, rows.size)
    train = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)),
                          shape=(n_users, n_items))
    train.sum_duplicates()  # sorted indices, a repeat drawn counts once
    train.data[:] = 1.0
    model.train_ = train
    return model


def gflops(n_users: int, n_items: int, seconds: float) -> float:
    return 2 * n_users * n_items * DIMS / seconds / 1e9


def gemm_seconds(queries: np.ndarray, targets: np.ndarray) -> float:
    """The blocked GEMM of top_k alone: one reused buffer of block_rows(targets) rows."""
    rows = min(block_rows(len(targets)), len(queries))
    buffer = np.empty((rows, len(targets)), np.float32)
    t = targets.T
    started = time.perf_counter()
    for start in range(0, len(queries), rows):
        block = queries[start:start + rows]
        np.matmul(block, t, out=buffer[:len(block)])
    return time.perf_counter() - started


def dense_check(model: LocalFMPair, ids: np.ndarray, scores: np.ndarray) -> dict:
    """The first SAMPLE users' answer against full score rows sorted by numpy."""
    vectors, bias = model.item_representations()
    s = model.user_representations(np.arange(SAMPLE)) @ vectors.T + bias
    seen = model.train_[:SAMPLE].tocoo()
    s[seen.row, seen.col] = -np.inf
    ref = np.argsort(-s, kind="stable")[:, :TOP]
    return {"users": SAMPLE,
            "id_rows_equal": float(np.mean(np.all(ids[:SAMPLE] == ref, axis=1))),
            "max_abs_score_diff": float(np.abs(scores[:SAMPLE]
                                               - np.take_along_axis(s, ref, 1)).max())}


def best_of(reps: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(reps))


def gemm_bound(model: LocalFMPair, reps: int) -> float:
    vectors, _ = model.item_representations()
    users = model.user_representations()
    return best_of(reps, lambda: gemm_seconds(users, vectors))


def recommend_local(model: LocalFMPair, reps: int) -> tuple[dict, float, np.ndarray, np.ndarray]:
    n_users, n_items = model.space_.n_users, model.space_.n_items
    gemm_s = gemm_bound(model, reps)
    log(f"  gemm {gemm_s:.2f} s, {gflops(n_users, n_items, gemm_s):.0f} GFLOP/s")
    model.recommend([0], k=TOP)  # loads (or compiles) the numba kernel outside the timing
    answer = {}

    def timed() -> float:
        with Peaks(own_rss, 0.02) as peaks:
            started = time.perf_counter()
            answer["ids"], answer["scores"] = model.recommend(k=TOP)
            seconds = time.perf_counter() - started
        answer["peak"] = max(answer.get("peak", 0), peaks.peak["driver"])
        return seconds
    before = own_rss()["driver"]
    seconds = best_of(reps, timed)
    log(f"  local recommend {seconds:.2f} s")
    local = {"recommend_s": round(seconds, 2), "users_per_s": round(n_users / seconds),
             "ratio_to_gemm": round(gemm_s / seconds, 3),
             "rss_before_mb": round(before / MB), "peak_rss_mb": round(answer["peak"] / MB),
             "beyond_model_mb": round((answer["peak"] - before) / MB),
             "sample": dense_check(model, answer["ids"], answer["scores"])}
    return local, gemm_s, answer["ids"], answer["scores"]


def users_frame(spark, train: sp.csr_matrix):
    """(id, exclude) per user from the CSR arrays in one Arrow table: no loop per row."""
    import pyarrow as pa
    exclude = pa.ListArray.from_arrays(pa.array(train.indptr.astype(np.int32)),
                                       pa.array(train.indices.astype(np.int64)))
    table = pa.table({"id": pa.array(np.arange(train.shape[0], dtype=np.int64)),
                      "exclude": exclude})
    users = spark.createDataFrame(table).repartition(2).persist()
    users.count()
    return users


def recommend_spark(spark, model: LocalFMPair, gemm_s: float, ids: np.ndarray,
                    scores: np.ndarray) -> dict:
    from pyspark.sql import functions as F
    n_users = model.space_.n_users
    users = users_frame(spark, model.train_)
    state = copy.copy(model)
    state.train_ = None  # the Spark model keeps no training matrix on the driver
    try:
        with Peaks(tree_rss, 0.1) as peaks:
            started = time.perf_counter()
            FMPairModel(state, users).recommendForAllUsers(TOP).write.format("noop") \
                .mode("overwrite").save()
            seconds = time.perf_counter() - started
        log(f"  spark recommend {seconds:.2f} s")
        # the filter goes before recommending: after it, Spark would score every user again
        rows = sorted(FMPairModel(state, users.where(F.col("id") < SAMPLE))
                      .recommendForAllUsers(TOP).collect(), key=lambda r: r.user)
    finally:
        users.unpersist()
    got_ids = np.array([[r.item for r in row.recommendations] for row in rows])
    got_scores = np.array([[r.rating for r in row.recommendations] for row in rows])
    same_ids = got_ids.shape == ids[:SAMPLE].shape and bool((got_ids == ids[:SAMPLE]).all())
    return {"recommend_s": round(seconds, 2), "users_per_s": round(n_users / seconds),
            "ratio_to_gemm": round(gemm_s / seconds, 3), "peak_rss_mb": peaks.mb(),
            "sample": {"users": len(rows), "ids_equal_local": same_ids,
                       "scores_within_1e-5": same_ids and bool(
                           np.allclose(got_scores, scores[:SAMPLE], rtol=0, atol=1e-5))}}


# -- fit ----------------------------------------------------------------------------------
def interactions(spark, n_users: int, n_items: int, n: int):
    """n (user, item) rows drawn on the executors, persisted; the last user and item are
    in, so fit sees exactly n_users × n_items."""
    from pyspark.sql import functions as F
    drawn = spark.range(n - 1, numPartitions=2).select(
        (F.rand(1) * n_users).cast("long").alias("user"),
        (F.pow(F.rand(2), 2) * n_items).cast("long").alias("item"))  # popular low ids
    last = spark.createDataFrame([(n_users - 1, n_items - 1)], "user long, item long")
    df = drawn.unionByName(last).persist()
    df.count()
    return df


def fit_spark(spark, n_users: int, n_items: int, n: int, shards: int) -> dict:
    df = interactions(spark, n_users, n_items, n)
    log(f"fit: {n_users:,} users × {n_items:,} items, {n:,} interactions")
    try:
        before = own_rss()["driver"]
        with Peaks(tree_rss, 0.1) as peaks:
            started = time.perf_counter()
            model = FMPair(numParameterServers=shards, **FIT).fit(df)
            seconds = time.perf_counter() - started
    finally:
        df.unpersist()
    epoch = model.history[0]
    return {"interactions": n, "fit_s": round(seconds, 2), "epoch_s": round(epoch["seconds"], 2),
            "pairs": epoch["pairs"], "pairs_per_s": round(epoch["pairs"] / epoch["seconds"]),
            "loss": round(epoch["loss"], 4), "driver_before_mb": round(before / MB),
            "peak_rss_mb": peaks.mb()}


# -- main ---------------------------------------------------------------------------------
def main() -> int:
    args = arguments(__doc__, "small sizes, under a minute, for CI",
                     "timed runs of the GEMM and of local recommend, the best reported "
                     "(default 1)")
    reps = args.reps or 1
    side = 20_000 if args.quick else 200_000
    fit_users, fit_items = (50_000, 10_000) if args.quick else (1_000_000, 200_000)
    fit_sizes = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("models.fmpair").setLevel(logging.INFO)

    log(f"recommend: {side:,} users × {side:,} items, dims {DIMS}")
    model = build_model(side, side)
    local, gemm_s, ids, scores = recommend_local(model, reps)
    spark = spark_session("scale-bench", **SPARK_CONF)
    try:
        log("spark recommend on local[2]")
        on_spark = recommend_spark(spark, model, gemm_s, ids, scores)
        del model, ids, scores  # the fits' driver peaks should not hold part 1
        small, large = (fit_spark(spark, fit_users, fit_items, n, args.shards) for n in fit_sizes)
    finally:
        spark.stop()

    print(json.dumps({
        "benchmark": "scale", "machine": machine(),
        "config": {"quick": args.quick, "reps": reps,
                   "recommend": {"users": side, "items": side, "dims": DIMS, "top": TOP,
                                 "train_items_per_user": PER_USER, "memory": DEFAULT_MEMORY,
                                 "block_rows": block_rows(side)},
                   "fit": {"users": fit_users, "items": fit_items, "interactions": fit_sizes,
                           "numParameterServers": args.shards, **FIT},
                   "spark_master": "local[2]", "spark_conf": SPARK_CONF},
        "recommend": {"gemm_s": round(gemm_s, 2),
                      "gemm_gflops": round(gflops(side, side, gemm_s), 1),
                      "local": local, "spark": on_spark},
        "fit": {"small": small, "large": large,
                "driver_peak_ratio_large_vs_small": round(
                    large["peak_rss_mb"]["driver"] / small["peak_rss_mb"]["driver"], 3)},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
