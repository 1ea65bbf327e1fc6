"""MF-SGD on the parameter server versus Surprise's SVD and pyspark.ml's ALS, in one run.

Run (JSON on stdout, progress on stderr):

    cd benchmarks && python mf_sgd.py [--quick] [--shards 2] [--reps EPOCHS] > mf_sgd.json

--quick (1,000 users × 600 items, ~40 ratings per user, 5 epochs) takes under a minute on
2 cores; the full run (6,000 users × 4,000 items, ~100 ratings per user, 20 epochs) a few
minutes. --reps sets the epoch count N (default 20, quick 5).

data: `models.synthetic_ratings.make_ratings` with its defaults, MovieLens-like:
r = 3.5 + b_u + b_i + ⟨p_u, q_i⟩ + ε, true rank 10, p, q, b_u, b_i ~ N(0, 0.3),
ε ~ N(0, 0.5²), clipped to [1, 5] (continuous, not rounded). Each user rates a uniform
random set of distinct items (between half and 1.5× the mean count); 10% of each user's
ratings (at least one) are the test set. All seeded; every method below sees the same
train and test split.

- rotation, async: `LocalMFSGD(schedule=...)` with OURS (async: ASYNC, below),
  num_workers=2 (threads running the numba kernels), an embedded LocalCluster with
  --shards shards, no
  validation set (each epoch still scores the train RMSE, and that time is in its
  `seconds`). updates_per_s is the
  median, over the epochs after the first (warm-up: numba, connections), of the epoch's
  `history_` updates / seconds. fit_s is the whole `fit`: cluster start and stop, model
  creation, the initial push, every epoch, the final pull. test_rmse is `model.predict`
  on the test set (unknown items get μ + b_u, as Surprise does), unclipped;
  test_rmse_clipped the same predictions clipped to [1, 5].
- bytes_per_update: a second fit of the same schedule on a LocalCluster started here
  (--shards shards), reading every shard's `stats` op (bytes_in + bytes_out of all its
  client connections, frames included, the shard's own connection to the master not
  counted) before and after the fit, divided by the ratings trained (epochs × train
  ratings). It includes the initial push of the item factors, the per-epoch pull of the
  whole item side that `fit` does to score the train RMSE, and the final pull;
  eval_bytes is our estimate of those three (payload only), and
  bytes_per_update_training = (total - eval_bytes) / updates, the traffic of the
  schedule itself. "run" gives that fit's updates_per_s and test_rmse, as a repeat.
- same_params: `LocalMFSGD` (rotation) with SURPRISE's hyper-parameters, no decay: the
  same algorithm as Surprise's SVD, so its test RMSE should be Surprise's within the
  noise of the visiting order, and its updates/s is a second pairing at equal settings.
- surprise: scikit-surprise's `SVD` (single-threaded Cython SGD with biases, float64,
  the same update; it visits the ratings in one fixed order every epoch, ours reshuffles
  every epoch) with SURPRISE's lr_all and reg_all and the same n_factors, n_epochs,
  init_std_dev, biased=True (it has no learning-rate decay). fit_s is `algo.fit`
  on a prebuilt trainset; updates_per_s = n_epochs × train ratings / fit_s. test_rmse
  from its factors (pu, qi, bu, bi through the trainset's inner ids; unknown ids as
  Surprise's `estimate` treats them), unclipped, and clipped as `algo.predict` does;
  predict_check is the largest difference from `algo.predict(..., clip=False)` on 200
  test ratings.
- als: pyspark.ml's `ALS` (explicit, rank = the same, maxIter = N, regParam = ALS_REG,
  coldStartStrategy "drop", seed 0) on local[2], 2 shuffle partitions, the training
  DataFrame cached and counted before the clock starts, a checkpoint directory set (without
  one, 20 iterations overflow the JVM stack on the lineage). fit_s is `als.fit`; test_rmse is
  the RegressionEvaluator's over the test ratings it can score (test_dropped had an item
  not in training; its predictions are not clipped). ALS is alternating least squares,
  not SGD, and has no biases: its updates_per_s = maxIter × train ratings / fit_s is only
  for scale.
- estimator: our pyspark.ml `MFSGD` (rotation, OURS, numParameterServers 2, integrated
  mode: the master on the driver, the shards started on the executors) in the same
  SparkSession on the same cached DataFrame, scored the same way. fit_s is the whole
  `fit` (aggregations, starting and stopping the shards, the training job, collecting
  the factors); updates_per_s is the median over epochs after the first of the epoch's
  ratings / its seconds (the tasks' mean), updates_per_s_fit = maxIter × train ratings /
  fit_s.
- baselines: sigma (the noise), true_model_rmse (the noiseless true score against the
  test ratings: the floor any model can reach, a little under sigma because the ratings
  are clipped), true_biases_rmse (the true 3.5 + b_u + b_i without the interaction: what
  a model that learns the biases perfectly and no factors would get), global_mean_rmse
  (the mean training rating for every test rating).
- kernel: the numba SGD kernel of `models.mf_sgd` alone, no server, medians of 3 after a
  warm-up. updates_per_s / pass_s: one thread, one call over all training ratings
  gathered in a random order (the compute floor of one worker). parallel_updates_per_s /
  parallel_epoch_s: one rotation epoch as `LocalMFSGD` computes it, on num_workers
  threads: users in contiguous blocks, one shared W and b_u, num_workers sub-epochs,
  each thread shuffling and gathering its ratings of its item block and training its own
  copy of the block; parallel_speedup = pass_s / parallel_epoch_s (num_workers would be
  perfect). eval_s: one `squared_errors` pass over
  the training ratings, the train RMSE that each of our epochs also computes.
  per_epoch_s in rotation/async is the median epoch's seconds, to set against these:
  compute_share = (parallel_epoch_s + eval_s) / per_epoch_s is the part of an epoch the
  kernels explain, overhead_s_per_epoch the rest (pulls, pushes, the server, executor
  hops, the per-epoch permutations and gathers, the item side pulled for the train RMSE);
  for rotation it is also given per sub-epoch (num_workers per epoch), for async per
  mini-batch of one worker (ms_per_batch = per_epoch_s / batches per worker).
- ratios: rotation_vs_surprise_updates = rotation updates/s / Surprise's updates/s, the
  same for async, same_params and ALS; *_test_rmse the same for test RMSE (below 1: ours
  is lower); *_vs_kernel against one kernel thread.
- requests: what a worker sends per step, each request timed alone as
  benchmarks/pullpush.py times one-row pulls (common.request_figures), on a LocalCluster
  started here (--shards shard processes) through one AsyncClient, with the worker's own
  calls (`models.mf_sgd.worker.pull_item_side` / `push_item_side`), on two models created
  as `LocalMFSGD.fit` creates them: create_model "mf_sgd" with this data's n_items, rank
  RANK and schedule "rotation" (aggregate replace) or "async" (add), then every item's
  factors pushed, N(0, INIT_STD), biases 0. row_bytes = (rank + 1) × 4: an item's factors
  and bias, float32.
  rotation_pull / rotation_push: a contiguous block of BLOCK_ITEMS = 300 items (items
  0-299: on one shard, as a rotation block is with 2 workers on 2 shards; the quick
  run's real block, the full run's are 2,000 items) pulled, and pushed back unchanged
  (replace), as a sub-epoch does. async_pull / async_push: BATCH_ITEMS = 300 distinct
  items drawn at random over the table (sorted, as np.unique gives a mini-batch's
  items: on every shard), a new set each call (64 sets, cycled), pulled, and deltas
  N(0, 1e-3) pushed (add), as an async mini-batch does (a batch of 1,024 ratings
  touches ~490 items on the quick data, ~900 on the full).
  seconds: the measurement's time (starting the raw server and the echo, creating the
  models; not the cluster's start). For each request: items; payload_bytes: [the arrays'
  bytes, both ways: the ids (int64) and the rows], headers not counted; us: p50/p99 µs of
  `rounds` calls (1,000, quick 100) after `warmup_rounds` (100, quick 20), in rounds that
  also make one raw socket round trip (raw_socket_rtt_us: pullpush's RawSocket, a child
  process that sends 256 bytes back for each 8-byte request), one uvloop echo
  (uvloop_echo_rtt_us: common.UvloopEcho, 256 bytes) and each request's raw mirror
  (raw_same_bytes_us: one raw request bringing payload_bytes back), the steps taking
  turns at going first; p50_over_raw_rtt = us.p50 / raw_socket_rtt_us.p50,
  p50_over_raw_same_bytes = us.p50 / raw_same_bytes_us.p50. pipelined_ops_per_s[W]:
  `pipelined_calls` calls (2,048, quick 128) from the one AsyncClient, W at a time
  (asyncio.gather of W, then the next W), W = 1, 16, 64; raw_pipelined_ops_per_s[W]: the
  raw socket, W requests of payload_bytes at once (RawSocket.pipelined); the two
  alternate by halves (raw, ours, raw, ours).

Hyper-parameters: rank 20 and init_std 0.1 for every SGD; each method's own chosen on data
drawn as above with seed 1 (not the benchmark's seed 0), by the RMSE on a random 10% of
its training ratings held out, 20 epochs:
- OURS: step_size 0.3, decay 0.85, reg 0.07, the best of step_size 0.1-0.5 × decay
  0.8-0.9 × reg 0.05-0.09 (0.5526; 0.35 gives 0.5530, 0.5 diverges). A large first step
  shrunk every epoch is what lets SGD leave the flat start of this weak rank-10
  interaction: with a constant step SGD stays near the biases alone.
- ASYNC: OURS with step_size 0.2. The async schedule's pushes are stale, and at 0.3 it
  diverged in 1 of 12 fits on the quick data (none of 12 at 0.2; on the full data 0.3
  gives test RMSE 0.5488, 0.2 0.5521).
- SURPRISE: lr_all 0.005, reg_all 0.05, the best constant step of 0.002-0.04 × reg
  0.02-0.15 (0.5711; Surprise's SVD has no decay).
- ALS_REG 0.07, the best of 0.03 0.6021, 0.05 0.5659, 0.07 0.5602, 0.1 0.5695, 0.15 0.5912.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common import Request, arguments, log, machine, request_figures
from models.mf_sgd import LocalMFSGD
from models.mf_sgd.kernels import sgd, squared_errors
from models.mf_sgd.worker import Worker, block_edges, pull_item_side, push_item_side
from models.synthetic_ratings import SyntheticRatings, make_ratings

RANK, INIT_STD, SEED = 20, 0.1, 0
OURS = {"step_size": 0.3, "decay": 0.85, "reg": 0.07}
ASYNC = {**OURS, "step_size": 0.2}  # stale pushes: 0.3 diverged in 1 of 12 quick runs
SURPRISE = {"step_size": 0.005, "decay": 1.0, "reg": 0.05}
ALS_REG = 0.07
SIGMA, LOW, HIGH = 0.5, 1.0, 5.0  # models.synthetic_ratings' defaults
WORKERS, BATCH, IN_FLIGHT = 2, 1024, 2
BLOCK_ITEMS, BATCH_ITEMS = 300, 300  # the requests timed in `requests`: items per request


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - actual) ** 2)))


def scores(predicted: np.ndarray, actual: np.ndarray) -> dict:
    return {"test_rmse": round(rmse(predicted, actual), 4),
            "test_rmse_clipped": round(rmse(np.clip(predicted, LOW, HIGH), actual), 4)}


def median_rate(history: list[dict]) -> tuple[float, float]:
    """(median updates/s, median seconds) over the epochs after the first."""
    rest = history[1:] or history
    return (statistics.median(h["updates"] / h["seconds"] for h in rest),
            statistics.median(h["seconds"] for h in rest))


def estimator(schedule: str, epochs: int, params: dict = OURS, **kwargs) -> LocalMFSGD:
    return LocalMFSGD(rank=RANK, epochs=epochs, init_std=INIT_STD, biases=True,
                      schedule=schedule, num_workers=WORKERS, seed=SEED, batch_size=BATCH,
                      concurrent_batches=IN_FLIGHT, show_progress=False, **params, **kwargs)


def shard_bytes(client) -> dict:
    """bytes_in + bytes_out of every shard, by name, from its `stats` op."""
    out = {}
    for server in client.status()["servers"]:
        stats = client.run(client.aio.request(server["address"], "stats",
                                              shard=server["name"])).args
        out[server["name"]] = stats["bytes_in"] + stats["bytes_out"]
    return out


def timed_fit(schedule: str, data: SyntheticRatings, epochs: int, shards: int, params: dict) -> dict:
    """One `fit` on an embedded cluster: speed and test RMSE."""
    (users, items, ratings), (tu, ti, tr) = data.train, data.test
    log(f"{schedule}: LocalMFSGD on an embedded cluster ({shards} shards), {params}")
    started = time.perf_counter()
    model = estimator(schedule, epochs, params, num_shards=shards).fit(users, items, ratings)
    fit_s = time.perf_counter() - started
    rate, per_epoch = median_rate(model.history_)
    result = {"updates_per_s": round(rate), "fit_s": round(fit_s, 2),
              "per_epoch_s": round(per_epoch, 4),
              **scores(model.predict(tu, ti), tr),
              "train_rmse_last_epoch": round(model.history_[-1]["train_rmse"], 4),
              "epoch_seconds": [round(h["seconds"], 4) for h in model.history_]}
    log(f"  {rate:,.0f} updates/s, fit {fit_s:.1f} s, test RMSE {result['test_rmse']:.4f}")
    return result


def ours(schedule: str, data: SyntheticRatings, epochs: int, shards: int) -> dict:
    """`timed_fit` with OURS (async: ASYNC), then a second fit that counts the bytes on
    the wire."""
    from psframework import Client, LocalCluster
    (users, items, ratings), (tu, ti, tr) = data.train, data.test
    params = ASYNC if schedule == "async" else OURS
    result = timed_fit(schedule, data, epochs, shards, params)
    log(f"{schedule}: bytes on the wire, on a LocalCluster started here")
    try:
        with LocalCluster(shards=shards) as cluster, Client(cluster.address) as client:
            before = shard_bytes(client)
            again = estimator(schedule, epochs, params, master=cluster.address).fit(
                users, items, ratings)
            after = shard_bytes(client)
    except Exception as e:  # report, do not hide the timed result
        result["bytes_per_update"] = None
        result["bytes_error"] = f"{type(e).__name__}: {e}"
        log(f"  failed: {result['bytes_error']}")
        return result
    total = sum(after[name] - before.get(name, 0) for name in after)
    updates = sum(h["updates"] for h in again.history_)
    n_items = int(items.max()) + 1
    side = n_items * (RANK + 1) * 4  # the items table: factors and bias, float32
    eval_bytes = (epochs + 2) * side  # initial push, per-epoch and final pulls
    again_rate, _ = median_rate(again.history_)
    result.update({
        "bytes_per_update": round(total / updates, 2),
        "bytes_per_update_training": round((total - eval_bytes) / updates, 2),
        "bytes_total": total, "eval_bytes": eval_bytes, "updates": updates,
        "run": {"updates_per_s": round(again_rate),
                "test_rmse": round(rmse(again.predict(tu, ti), tr), 4)}})
    log(f"  {result['bytes_per_update']:.1f} bytes/update "
        f"({result['bytes_per_update_training']:.1f} without the item-side pulls)")
    return result


def requests(data: SyntheticRatings, shards: int, quick: bool) -> dict:
    """A worker's requests, each timed alone beside a raw round trip and the uvloop echo
    (common.request_figures), on a LocalCluster started here."""
    from psframework import LocalCluster
    n_items = int(data.train[1].max()) + 1
    rng = np.random.default_rng(SEED)
    block = np.arange(BLOCK_ITEMS)
    scattered = [np.sort(rng.choice(n_items, BATCH_ITEMS, replace=False)) for _ in range(64)]
    dH = rng.normal(0, 1e-3, (BATCH_ITEMS, RANK)).astype(np.float32)
    dbi = rng.normal(0, 1e-3, BATCH_ITEMS).astype(np.float32)
    trip = (BLOCK_ITEMS * 8 + BLOCK_ITEMS * (RANK + 1) * 4,)  # ids, and the rows
    scattered_trip = (BATCH_ITEMS * 8 + BATCH_ITEMS * (RANK + 1) * 4,)

    async def prepare(client) -> dict[str, Request]:
        names = {s: f"mf_sgd-requests-{s}" for s in ("rotation", "async")}
        start = np.random.default_rng(SEED).normal(0, INIT_STD, (n_items, RANK)).astype(np.float32)
        for schedule, name in names.items():  # as LocalMFSGD.fit creates and fills it
            await client.create_model(name, "mf_sgd", {"n_items": n_items, "rank": RANK,
                                                       "schedule": schedule})
            await push_item_side(client, name, np.arange(n_items), start,
                                 np.zeros(n_items, np.float32))
        H, bi = await pull_item_side(client, names["rotation"], block)
        rotation, hogwild = names["rotation"], names["async"]
        return {
            "rotation_pull": Request(lambda i: pull_item_side(client, rotation, block), trip,
                                     {"items": BLOCK_ITEMS}),
            "rotation_push": Request(lambda i: push_item_side(client, rotation, block, H, bi),
                                     trip, {"items": BLOCK_ITEMS}),
            "async_pull": Request(lambda i: pull_item_side(client, hogwild, scattered[i % 64]),
                                  scattered_trip, {"items": BATCH_ITEMS}),
            "async_push": Request(lambda i: push_item_side(client, hogwild, scattered[i % 64],
                                                           dH, dbi),
                                  scattered_trip, {"items": BATCH_ITEMS})}

    log(f"requests: on a LocalCluster ({shards} shards)")
    with LocalCluster(shards=shards) as cluster:
        figures = request_figures(cluster.address, prepare, quick)
    return {"rank": RANK, "n_items": n_items, "row_bytes": (RANK + 1) * 4, **figures}


def kernel(data: SyntheticRatings) -> dict:
    """The SGD kernel alone: one thread over all training ratings, then the rotation's
    sub-epochs on WORKERS threads, computed as `LocalMFSGD`'s workers compute them
    (`Worker.train_block`: shuffle, gather, kernel), minus the server."""
    users, items, ratings = data.train
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    u32, i32, r32 = users.astype(np.int32), items.astype(np.int32), ratings.astype(np.float32)
    rng = np.random.default_rng(SEED)
    W0 = rng.normal(0, INIT_STD, (n_users, RANK)).astype(np.float32)
    H0 = rng.normal(0, INIT_STD, (n_items, RANK)).astype(np.float32)
    bu0, bi0 = np.zeros(n_users, np.float32), np.zeros(n_items, np.float32)
    mu, lr, reg = float(ratings.mean()), SURPRISE["step_size"], SURPRISE["reg"]
    W, H, bu, bi = W0.copy(), H0.copy(), bu0.copy(), bi0.copy()
    sgd(u32[:100], i32[:100], r32[:100], W, bu, H, bi, 0, mu, lr, reg, True)  # compile
    W, H, bu, bi = W0.copy(), H0.copy(), bu0.copy(), bi0.copy()
    times = []
    for _ in range(3):
        order = rng.permutation(users.size)
        u, i, r = u32[order], i32[order], r32[order]
        started = time.perf_counter()
        sgd(u, i, r, W, bu, H, bi, 0, mu, lr, reg, True)
        times.append(time.perf_counter() - started)
    squared_errors(u32[:100], i32[:100], r32[:100], W, bu, H, bi, mu, True)
    started = time.perf_counter()
    squared_errors(u32, i32, r32, W, bu, H, bi, mu, True)
    eval_s = time.perf_counter() - started
    one = statistics.median(times)

    by_user, edges = block_edges(n_users, WORKERS), block_edges(n_items, WORKERS)
    W, bu = W0.copy(), bu0.copy()
    workers = [Worker(None, "", w, users[mine], items[mine], ratings[mine], W, bu, mu=mu,
                      reg=reg, biases=True, seed=SEED, edges=edges)
               for w in range(WORKERS)
               for mine in [(users >= by_user[w]) & (users < by_user[w + 1])]]
    epochs = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for epoch in range(4):  # the first compiles for these arrays' types
            started = time.perf_counter()
            for s in range(WORKERS):
                blocks = [(w, (w.index + s) % WORKERS) for w in workers]
                list(pool.map(lambda wb: wb[0].train_block(
                    epoch, wb[1], H0[edges[wb[1]]:edges[wb[1] + 1]].copy(),
                    bi0[edges[wb[1]]:edges[wb[1] + 1]].copy(), lr), blocks))
            epochs.append(time.perf_counter() - started)
    parallel = statistics.median(epochs[1:])
    log(f"kernel: {users.size / one:,.0f} updates/s on one thread, "
        f"{users.size / parallel:,.0f} on {WORKERS} (rotation's split), "
        f"eval pass {1000 * eval_s:.2f} ms")
    return {"updates_per_s": round(users.size / one), "pass_s": round(one, 6),
            "parallel_updates_per_s": round(users.size / parallel),
            "parallel_epoch_s": round(parallel, 6),
            "parallel_speedup": round(one / parallel, 3), "eval_s": round(eval_s, 6)}


def inner_ids(to_inner, ids: np.ndarray) -> np.ndarray:
    """Surprise's inner id of each raw id, -1 for one it does not know."""
    def known(raw: int) -> int:
        try:
            return to_inner(raw)
        except ValueError:
            return -1
    inner = {raw: known(raw) for raw in np.unique(ids).tolist()}
    return np.array([inner[raw] for raw in ids.tolist()])


def surprise_svd(data: SyntheticRatings, epochs: int) -> dict:
    try:
        import pandas as pd
        from surprise import SVD, Dataset, Reader
        import surprise
    except ImportError as e:
        return {"error": f"scikit-surprise is not installed: {e}"}
    (users, items, ratings), (tu, ti, tr) = data.train, data.test
    log("surprise: SVD")
    frame = pd.DataFrame({"user": users, "item": items, "rating": ratings})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=(LOW, HIGH))
                                    ).build_full_trainset()
    algo = SVD(n_factors=RANK, n_epochs=epochs, biased=True, init_mean=0,
               init_std_dev=INIT_STD, lr_all=SURPRISE["step_size"], reg_all=SURPRISE["reg"],
               random_state=SEED)
    started = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - started
    # predictions from the factors, with Surprise's rule for unknown users and items
    ui, ii = inner_ids(trainset.to_inner_uid, tu), inner_ids(trainset.to_inner_iid, ti)
    ku, ki = ui >= 0, ii >= 0
    est = np.full(tu.size, trainset.global_mean)
    est[ku] += algo.bu[ui[ku]]
    est[ki] += algo.bi[ii[ki]]
    both = ku & ki
    est[both] += np.einsum("nd,nd->n", algo.pu[ui[both]], algo.qi[ii[both]])
    check = max(abs(algo.predict(u, i, clip=False).est - e)
                for u, i, e in zip(tu[:200].tolist(), ti[:200].tolist(), est[:200]))
    rate = epochs * users.size / fit_s
    result = {"version": surprise.__version__, "updates_per_s": round(rate),
              "fit_s": round(fit_s, 2), **scores(est, tr),
              "predict_check": float(f"{check:.2e}"),
              "test_unknown_items": int((~ki).sum())}
    log(f"  {rate:,.0f} updates/s, fit {fit_s:.1f} s, test RMSE {result['test_rmse']:.4f}")
    return result


def spark(data: SyntheticRatings, epochs: int) -> dict:
    """pyspark.ml's ALS and our MFSGD estimator in one local[2] SparkSession, on the same
    cached training DataFrame, each scored by RegressionEvaluator on the test ratings."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    import pandas as pd
    import pyspark
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession
    from models.mf_sgd import MFSGD
    (users, items, ratings), (tu, ti, tr) = data.train, data.test
    session = (SparkSession.builder.master("local[2]").appName("mf_sgd-bench")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    checkpoints = tempfile.TemporaryDirectory(prefix="mf_sgd-als-")
    session.sparkContext.setCheckpointDir(checkpoints.name)
    evaluator = RegressionEvaluator(metricName="rmse", labelCol="rating",
                                    predictionCol="prediction")
    out = {}
    try:
        def frame(u, i, r):
            return session.createDataFrame(pd.DataFrame({
                "user": u.astype(np.int32), "item": i.astype(np.int32),
                "rating": r.astype(np.float32)}))
        train = frame(users, items, ratings).repartition(2).cache()
        test = frame(tu, ti, tr).cache()
        train.count(), test.count()
        for name, estimator_ in (
                ("als", ALS(rank=RANK, maxIter=epochs, regParam=ALS_REG, userCol="user",
                            itemCol="item", ratingCol="rating", coldStartStrategy="drop",
                            implicitPrefs=False, seed=SEED)),
                ("estimator", MFSGD(rank=RANK, maxIter=epochs, stepSize=OURS["step_size"],
                                    decay=OURS["decay"], regParam=OURS["reg"], seed=SEED,
                                    coldStartStrategy="drop", numParameterServers=2))):
            log(f"{name}: {type(estimator_).__name__} on local[2]")
            started = time.perf_counter()
            model = estimator_.fit(train)
            fit_s = time.perf_counter() - started
            predictions = model.transform(test).cache()
            scored = predictions.count()
            rate = epochs * users.size / fit_s
            out[name] = {"fit_s": round(fit_s, 2),
                         "test_rmse": round(evaluator.evaluate(predictions), 4),
                         "test_dropped": int(tu.size - scored)}
            if name == "als":
                out[name].update(version=pyspark.__version__, reg_param=ALS_REG,
                                 updates_per_s=round(rate), updates_per_s_note=(
                                     "maxIter x train ratings / fit_s; ALS is not SGD"))
            else:
                out[name].update(updates_per_s_fit=round(rate),
                                 updates_per_s=round(median_rate(model.history)[0]))
            log(f"  fit {fit_s:.1f} s, test RMSE {out[name]['test_rmse']:.4f}")
            predictions.unpersist()
    finally:
        session.stop()
        checkpoints.cleanup()
    return out


def main() -> int:
    args = arguments(__doc__, "small data and 5 epochs, for CI",
                     "epochs N for every method (default 20, quick 5)")
    epochs = args.reps or (5 if args.quick else 20)
    n_users, n_items, per_user = (1000, 600, 40) if args.quick else (6000, 4000, 100)
    data = make_ratings(n_users, n_items, per_user, seed=SEED)
    (users, items, ratings), (tu, ti, tr) = data.train, data.test
    log(f"data: {n_users} users, {n_items} items, {users.size} train and {tu.size} test "
        f"ratings; {epochs} epochs")
    baselines = {"sigma": SIGMA, "true_model_rmse": round(rmse(data.test_true, tr), 4),
                 "true_biases_rmse": round(rmse(data.test_biases, tr), 4),
                 "global_mean_rmse": round(rmse(np.full(tr.size, ratings.mean()), tr), 4)}
    log(f"baselines: {baselines}")

    out: dict = {"benchmark": "mf_sgd", "machine": machine(), "config": {
        "quick": args.quick, "epochs": epochs, "rank": RANK, "ours": OURS, "async": ASYNC, "surprise": SURPRISE,
        "init_std": INIT_STD, "biases": True, "seed": SEED, "num_workers": WORKERS,
        "shards": args.shards, "async_batch_size": BATCH, "async_concurrent_batches": IN_FLIGHT,
        "als_reg_param": ALS_REG, "spark_master": "local[2]"},
        "data": {"users": n_users, "items": n_items, "ratings_per_user_mean": per_user,
                 "train_ratings": int(users.size), "test_ratings": int(tu.size),
                 "generator": "models.synthetic_ratings.make_ratings, its defaults",
                 "test_items_unseen_in_train": int(np.setdiff1d(ti, items).size)},
        "baselines": baselines}
    out["kernel"] = k = kernel(data)
    for schedule in ("rotation", "async"):
        out[schedule] = r = ours(schedule, data, epochs, args.shards)
        compute = k["parallel_epoch_s"] + k["eval_s"]
        r["compute_share"] = round(compute / r["per_epoch_s"], 3)
        r["overhead_s_per_epoch"] = round(r["per_epoch_s"] - compute, 5)
        if schedule == "rotation":
            r["overhead_ms_per_sub_epoch"] = round(1000 * r["overhead_s_per_epoch"] / WORKERS, 2)
        else:
            batches = -(-users.size // WORKERS // BATCH)
            r["ms_per_batch"] = round(1000 * r["per_epoch_s"] / batches, 3)
    out["same_params"] = timed_fit("rotation", data, epochs, args.shards, SURPRISE)
    out["surprise"] = surprise_svd(data, epochs)
    out["requests"] = requests(data, args.shards, args.quick)
    try:
        out.update(spark(data, epochs))
    except Exception as e:
        log(f"spark failed: {type(e).__name__}: {e}")
        out["als"] = {"error": f"{type(e).__name__}: {e}"}

    ratios = {}
    for name in ("rotation", "async", "same_params"):
        ours_rate = out[name]["updates_per_s"]
        for other in ("surprise", "als"):
            if "updates_per_s" in out[other]:
                ratios[f"{name}_vs_{other}_updates"] = round(
                    ours_rate / out[other]["updates_per_s"], 3)
                ratios[f"{name}_vs_{other}_test_rmse"] = round(
                    out[name]["test_rmse"] / out[other]["test_rmse"], 4)
        ratios[f"{name}_vs_kernel_updates"] = round(ours_rate / out["kernel"]["updates_per_s"], 3)
    if "updates_per_s" in out.get("estimator", {}):
        ratios["estimator_vs_rotation_updates"] = round(
            out["estimator"]["updates_per_s"] / out["rotation"]["updates_per_s"], 3)
        ratios["estimator_vs_als_fit_s"] = round(out["estimator"]["fit_s"] / out["als"]["fit_s"], 3)
        ratios["estimator_vs_als_test_rmse"] = round(
            out["estimator"]["test_rmse"] / out["als"]["test_rmse"], 4)
    ratios["async_vs_rotation_updates"] = round(
        out["async"]["updates_per_s"] / out["rotation"]["updates_per_s"], 3)
    if "updates_per_s" in out["surprise"]:
        ratios["surprise_vs_kernel_updates"] = round(
            out["surprise"]["updates_per_s"] / out["kernel"]["updates_per_s"], 3)
    out["ratios"] = ratios
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
