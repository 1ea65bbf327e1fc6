"""FMPair throughput and bytes on the wire: network-efficient ops vs a naive row-pulling
worker vs single-threaded `implicit` BPR, all on the same synthetic data in one run; with
--movielens-shape instead, `LocalFMPair.fit` end to end vs LightFM on a MovieLens-100k-sized
problem (fit seconds and precision@10 side by side).

Run (JSON on stdout, progress on stderr; needs the `bench` extra for `implicit`):

    pip install -e '.[bench]'
    python benchmarks/fmpair.py [--quick] [--shards 2] [--reps 9] > fmpair.json
    python benchmarks/fmpair.py --movielens-shape [--quick] [--shards 2] [--reps 3]

--quick (2k users, 1k items, 2 epochs) finishes in well under a minute, for CI; the full
run (10k users, 5k items, about 16 training positives per user) about 90 s on 2 cores.

What the numbers mean, for each k in (32, 64, 128) and, for the parameter server, each
batch size in (256, 4096); every model trains `reps + 1` epochs (iterations):

- efficient: the real FMPair ops (`models.fmpair.worker.Trainer`: dotprod + adjust, BPR,
  uniform sampler rejecting seen items, AdaGrad, step 0.05, 2 batches in flight) on a
  LocalCluster with `--shards` shards. The first epoch is a warm-up (connections, numba);
  `pairs_per_s` is the median (and `best_pairs_per_s` the best) of the other epochs, a
  pair being one training positive with its one sampled negative. `bytes_per_pair` is
  the sum over shards of bytes_in + bytes_out (shard `stats`) during the timed epochs,
  divided by the pairs; it does not depend on k, since only indices, weights and a few
  floats per pair cross the network. `precision_at_10` is measured on the held-out test
  positives, training items excluded (`models.metrics.precision_at_k`), after all
  `reps + 1` epochs.
- naive: the same BPR math with the same batches, but the worker pulls the full rows
  (all k columns) of every distinct feature of the batch (deduplicated, so a fair
  baseline) with `pull_rows` on the model's `factors` and `linear` tables, computes
  the gradient in numpy and pushes the row deltas back with `push_rows` (aggregator
  "add"). Plain SGD (step 0.05 on the batch's summed gradient, no AdaGrad: the
  accumulators would double the traffic); 2 batches in flight; one warm-up epoch and
  `min(reps, 2)` timed ones, since only the bytes and the rate are asked of it.
  `bytes_ratio` = naive bytes_per_pair / efficient bytes_per_pair.
- implicit: `implicit.cpu.bpr.BayesianPersonalizedRanking(num_threads=1)`, same k, step
  0.05, regularization 0.01, `reps + 1` iterations, the same training matrix.
  `pairs_per_s` = nnz × iterations / fit seconds, implicit's own definition: one
  iteration draws nnz (user, positive) pairs *with replacement* and one negative per
  pair in proportion to popularity, and a draw whose negative the user has is skipped
  but still counted. `fmpair_vs_implicit` = efficient pairs/s / implicit pairs/s.
- popularity_precision_at_10: the popularity baseline, for scale.

Assumptions: all processes share one machine (`cpu_count` in the output): FMPair's
client and shards compete for its cores, implicit uses one thread. Wire bytes include
frame headers and the few `stats` requests, not the master (it is off the data path).

--movielens-shape: what a user of each library experiences, side by side in one run, on
`make_synthetic(n_users=943, n_items=1682, interactions_per_user=120, test_fraction=0.2,
seed=0)`: MovieLens-100k's users and items, 90,125 training and 22,555 test positives.
k = 32 and 10 epochs everywhere, every other setting each library's default:

- fmpair: `LocalFMPair(dims=32, epochs=10, seed=0, num_shards=--shards)` (BPR, uniform
  sampler rejecting seen items, AdaGrad, step 0.05, batch 4096, 2 batches in flight).
  `fit_s` times the whole `fit(train)` call: it starts an embedded LocalCluster (a
  master and the shards as threads of this process; the first fit in the process also
  loads the kernels), creates the model, trains, pulls the factors, destroys the model
  and stops the cluster. Its
  `callback(epoch, elapsed, loss)` splits that into `startup_s` (fit called -> first
  batch: data checks, feature space, sampler, cluster start, model creation),
  `training_s` (the epochs) and `teardown_s` (last epoch done -> fit returns: pulling
  the factors, destroying the model, stopping the cluster); `epoch_s` and
  `epoch_pairs_per_s` are per epoch (pairs = training positives, one negative each).
- lightfm_bpr: `LightFM(no_components=32, loss="bpr", random_state=0).fit(train.tocoo(),
  epochs=10, num_threads=1)`, the same loss as FMPair; the baseline of the targets.
- lightfm_warp: the same with loss="warp" (LightFM's recommended loss), for reference.
- implicit_bpr: `implicit.cpu.bpr.BayesianPersonalizedRanking(factors=32, iterations=10,
  num_threads=1, random_state=0)`, when implicit is installed (its defaults: learning
  rate 0.01, regularization 0.01, negatives drawn by popularity).

Every fit is repeated `--reps` times (default 3, 1 with --quick), the libraries
interleaved (fmpair, lightfm_bpr, lightfm_warp, implicit_bpr, fmpair, ...), so load
drifts hit all alike; `fit_s` is the median (`fit_s_each` every rep; the first fmpair rep
is slower: the kernels load into the process, and may compile if numba's disk cache
is cold), `pairs_per_s` = training
positives × epochs / median fit_s. `precision_at_10` (median over the reps) is measured
by the same function for every model, this module's `precision` (which calls
`models.metrics.precision_at_k`: held-out test positives, training items excluded), on
scores computed here in numpy from each model's factors and biases (LightFM's user bias
is left out: it is constant per user, so it does not change a ranking); they are checked
against the model's own `predict` on sampled pairs. LightFM's own evaluation is not used.
`popularity_precision_at_10` gives the scale. Targets, against lightfm_bpr:
`fmpair_fit_over_lightfm` = fmpair fit_s / lightfm_bpr fit_s (<= 1.5) and
`fmpair_precision_over_lightfm` = fmpair precision / lightfm_bpr precision (>= 0.95),
each {value, target, met}; `other_ratios` gives the same two against the other rows.
--quick uses 300 users × 500 items (28,528 training positives) and 2 epochs (< 30 s).

LightFM 1.17 comes as a source distribution to build; these commands build it (the
ones the benchmark venv was made with):

    pip install 'pip<24' setuptools wheel cython
    pip install --no-build-isolation --no-use-pep517 lightfm

Fallback, so that the mode never fails for a missing library: without LightFM the
targets are computed against implicit_bpr instead (`fmpair_fit_over_implicit_bpr`,
`fmpair_precision_over_implicit_bpr`, same thresholds) and `baseline` and `note` in the
JSON say so; with neither library FMPair is reported alone, `targets` is empty and
`note` says why.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp

from common import arguments, log, machine
from psframework import AsyncClient, LocalCluster, run
from models.fmpair import LocalFMPair, losses
from models.fmpair.features import FeatureSpace
from models.fmpair.sampling import NegativeSampler
from models.fmpair.worker import Trainer
from models.metrics import precision_at_k
from models.synthetic import make_synthetic, popularity_scores

DIMS = (32, 64, 128)
BATCH_SIZES = (256, 4096)
STEP = 0.05
IN_FLIGHT = 2


async def wire_bytes(client: AsyncClient, model: str) -> int:
    """bytes_in + bytes_out so far, summed over the shards holding `model`."""
    info = await client.model(model)
    total = 0
    for address in set(info.servers.values()):
        stats = (await client.request(address, "stats")).args
        total += stats["bytes_in"] + stats["bytes_out"]
    return total


def precision(user_vectors: np.ndarray, item_vectors: np.ndarray, item_bias: np.ndarray,
              data) -> float:
    return round(float(precision_at_k(lambda u: user_vectors[u] @ item_vectors.T + item_bias,
                                      data.test, 10, train=data.train)), 4)


# -- network-efficient FMPair ------------------------------------------------------------------
async def efficient(client: AsyncClient, space: FeatureSpace, data, k: int, batch: int,
                    epochs: int) -> dict:
    name = f"bench-efficient-{k}-{batch}"
    await client.create_model(name, "fmpair", {"n_features": space.n_features, "dims": k,
                                               "step_size": STEP, "seed": 0})
    try:
        trainer = Trainer(client, name, space, data.train, NegativeSampler(data.train),
                          loss="bpr", batch_size=batch, concurrent_batches=IN_FLIGHT, seed=0)
        await trainer.epoch(0)
        before = await wire_bytes(client, name)
        timed = [await trainer.epoch(e) for e in range(1, epochs)]
        moved = await wire_bytes(client, name) - before
        every = np.arange(space.n_features)
        factors = await client.pull_rows(name, "factors", every)
        linear = await client.pull_rows(name, "linear", every)
    finally:
        await client.destroy(name)
    nu, io = space.n_user_features, space.item_offset
    rates = [s.pairs_per_second for s in timed]
    out = {"pairs_per_s": round(statistics.median(rates)), "best_pairs_per_s": round(max(rates)),
           "bytes_per_pair": round(moved / sum(s.pairs for s in timed), 1),
           "final_loss": round(timed[-1].loss, 4),
           "precision_at_10": precision(space.user @ factors[:nu], space.item @ factors[io:],
                                        space.item @ linear[io:], data)}
    log(f"efficient k={k} batch={batch}: {out}")
    return out


# -- naive: pull full rows, compute locally, push row deltas -----------------------------------
def _bag_matrix(bags, columns: np.ndarray, width: int) -> sp.csr_matrix:
    indptr, _, weights = bags
    return sp.csr_matrix((weights, columns, indptr), shape=(indptr.size - 1, width))


async def naive_step(client: AsyncClient, name: str, b: losses.Batch, n_items: int
                     ) -> tuple[float, int]:
    """Pull the batch's rows, take a plain SGD step in numpy, push the row deltas."""
    users, items = b.user_bags, b.item_bags
    feats, pos = np.unique(np.concatenate([users[1], items[1]]), return_inverse=True)
    item_feats, item_pos = np.unique(items[1], return_inverse=True)
    v, w = await asyncio.gather(client.pull_rows(name, "factors", feats),
                                client.pull_rows(name, "linear", item_feats))
    u_mat = _bag_matrix(users, pos[:users[1].size], feats.size)
    i_mat = _bag_matrix(items, pos[users[1].size:], feats.size)
    l_mat = _bag_matrix(items, item_pos, item_feats.size)
    su, si, li = u_mat @ v, i_mat @ v, l_mat @ w
    scores = np.einsum("bd,bmd->bm", su, si[b.pairs]) + li[b.pairs]
    c_diff, total, counted = losses.coefficients("bpr", scores[:, :1] - scores[:, 1:],
                                                 b.valid, n_items)
    coef = np.concatenate([c_diff.sum(axis=1, keepdims=True), -c_diff], axis=1)
    rows = np.repeat(np.arange(b.pairs.shape[0]), b.pairs.shape[1])
    p = sp.csr_matrix((coef.ravel(), (b.pairs.ravel(), rows)), shape=(si.shape[0], su.shape[0]))
    d_user, d_item = p.T @ si, p @ su  # ascent directions of the bag sums
    grad = u_mat.T @ d_user + i_mat.T @ d_item
    grad_lin = l_mat.T @ np.asarray(p.sum(axis=1)).ravel()
    await asyncio.gather(
        client.push_rows(name, "factors", feats, (STEP * grad).astype(np.float32)),
        client.push_rows(name, "linear", item_feats, (STEP * grad_lin).astype(np.float32)))
    return total, counted


async def naive_epoch(client: AsyncClient, name: str, space: FeatureSpace, sampler, users,
                      items, rng: np.random.Generator, batch: int) -> tuple[float, float]:
    """One epoch with IN_FLIGHT batches in flight: (seconds, mean loss)."""
    started = time.perf_counter()
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def step(b: losses.Batch) -> tuple[float, int]:
        try:
            return await naive_step(client, name, b, space.n_items)
        finally:
            slots.release()
    tasks = []
    order = rng.permutation(users.size)
    for start in range(0, order.size, batch):
        await slots.acquire()
        idx = order[start:start + batch]
        b = losses.prepare(users[idx], items[idx], space, sampler, rng, 1)
        tasks.append(asyncio.ensure_future(step(b)))
    done = await asyncio.gather(*tasks)
    return time.perf_counter() - started, sum(t for t, _ in done) / max(sum(c for _, c in done), 1)


async def naive(client: AsyncClient, space: FeatureSpace, data, k: int, batch: int,
                epochs: int) -> dict:
    name = f"bench-naive-{k}-{batch}"
    await client.create_model(name, "fmpair", {"n_features": space.n_features, "dims": k,
                                               "optimizer": "adabatch", "seed": 0})
    coo = data.train.tocoo()
    users, items = coo.row.astype(np.int64), coo.col.astype(np.int64)
    sampler, rng = NegativeSampler(data.train), np.random.default_rng(0)
    try:
        await naive_epoch(client, name, space, sampler, users, items, rng, batch)
        before = await wire_bytes(client, name)
        timed = [await naive_epoch(client, name, space, sampler, users, items, rng, batch)
                 for _ in range(epochs)]
        moved = await wire_bytes(client, name) - before
    finally:
        await client.destroy(name)
    rates = [users.size / seconds for seconds, _ in timed]
    out = {"pairs_per_s": round(statistics.median(rates)), "best_pairs_per_s": round(max(rates)),
           "bytes_per_pair": round(moved / (users.size * epochs), 1),
           "final_loss": round(timed[-1][1], 4)}
    log(f"naive k={k} batch={batch}: {out}")
    return out


# -- implicit ----------------------------------------------------------------------------------
def implicit_bpr(data, k: int, iterations: int) -> dict:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    model = BayesianPersonalizedRanking(factors=k, learning_rate=STEP, regularization=0.01,
                                        iterations=iterations, num_threads=1, random_state=0)
    started = time.perf_counter()
    model.fit(data.train, show_progress=False)
    seconds = time.perf_counter() - started
    # the last column is the item bias (users hold 1 there), so a plain dot product scores
    out = {"pairs_per_s": round(data.train.nnz * iterations / seconds),
           "precision_at_10": precision(model.user_factors, model.item_factors,
                                        np.zeros(data.n_items, np.float32), data)}
    log(f"implicit k={k}: {out}")
    return out


# -- the run -----------------------------------------------------------------------------------
async def parameter_server(address: str, space: FeatureSpace, data, reps: int) -> dict:
    results: dict = {}
    async with AsyncClient(address) as client:
        for k in DIMS:
            for batch in BATCH_SIZES:
                eff = await efficient(client, space, data, k, batch, reps + 1)
                nai = await naive(client, space, data, k, batch, min(reps, 2))
                results[(k, batch)] = {
                    "efficient": eff, "naive": nai,
                    "bytes_ratio": round(nai["bytes_per_pair"] / eff["bytes_per_pair"], 2)}
    return results


# -- --movielens-shape: LocalFMPair end to end vs LightFM ---------------------------------------
ML_SEED = 0
ML_DIMS = 32
ML_SHAPE = {"full": (943, 1682, 10), "quick": (300, 500, 2)}  # users, items, epochs
TARGETS = {"fit": 1.5, "precision": 0.95}  # fmpair / baseline: fit at most, precision at least


def _check_scores(name: str, predicted, users: np.ndarray, items: np.ndarray,
                  user_vectors: np.ndarray, item_vectors: np.ndarray, item_bias: np.ndarray,
                  user_bias: np.ndarray | None = None) -> None:
    """The numpy scores given to `precision` agree with the model's own predict."""
    ours = (user_vectors[users] * item_vectors[items]).sum(axis=1) + item_bias[items]
    if user_bias is not None:
        ours = ours + user_bias[users]
    if not np.allclose(ours, predicted, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"{name}: numpy scores disagree with predict, max difference "
                             f"{np.abs(ours - predicted).max()}")


def _sample_pairs(data, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.integers(data.n_users, size=n, dtype=np.int64),
            rng.integers(data.n_items, size=n, dtype=np.int64))


def ml_fmpair(data, epochs: int, shards: int) -> dict:
    """One LocalFMPair.fit, timed whole and split by its callback."""
    marks: list[tuple[float, float, float]] = []  # (clock, elapsed, loss) after each epoch
    model = LocalFMPair(dims=ML_DIMS, epochs=epochs, seed=ML_SEED, num_shards=shards,
                        show_progress=False,
                        callback=lambda epoch, elapsed, loss: marks.append(
                            (time.perf_counter(), elapsed, loss)))
    started = time.perf_counter()
    model.fit(data.train)
    ended = time.perf_counter()
    clock, elapsed, loss = (np.array(column) for column in zip(*marks))
    epoch_s = np.diff(elapsed, prepend=0.0)
    users, (vectors, bias) = model.user_representations(), model.item_representations()
    u, i = _sample_pairs(data)
    _check_scores("fmpair", model.predict(u, i), u, i, users, vectors, bias)
    return {"fit_s": ended - started,
            "startup_s": clock[0] - elapsed[0] - started,  # training began at clock - elapsed
            "training_s": float(elapsed[-1]),
            "teardown_s": ended - clock[-1],
            "epoch_s": [round(float(s), 3) for s in epoch_s],
            "epoch_pairs_per_s": [round(data.train.nnz / float(s)) for s in epoch_s],
            "final_loss": round(float(loss[-1]), 4),
            "precision_at_10": precision(users, vectors, bias, data)}


def ml_lightfm(data, loss: str, epochs: int) -> dict:
    from lightfm import LightFM
    model = LightFM(no_components=ML_DIMS, loss=loss, random_state=ML_SEED)
    train = data.train.tocoo()
    started = time.perf_counter()
    model.fit(train, epochs=epochs, num_threads=1)
    seconds = time.perf_counter() - started
    user_bias, users = model.get_user_representations()
    item_bias, items = model.get_item_representations()
    u, i = _sample_pairs(data)
    _check_scores(f"lightfm {loss}", model.predict(u.astype(np.int32), i.astype(np.int32)),
                  u, i, users, items, item_bias, user_bias)
    return {"fit_s": seconds, "precision_at_10": precision(users, items, item_bias, data)}


def ml_implicit(data, epochs: int) -> dict:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    model = BayesianPersonalizedRanking(factors=ML_DIMS, iterations=epochs, num_threads=1,
                                        random_state=ML_SEED)
    started = time.perf_counter()
    model.fit(data.train, show_progress=False)
    seconds = time.perf_counter() - started
    # the last column is the item bias (users hold 1 there), so a plain dot product scores
    return {"fit_s": seconds,
            "precision_at_10": precision(model.user_factors, model.item_factors,
                                         np.zeros(data.n_items, np.float32), data)}


def _installed(module: str, distribution: str) -> str | None:
    """The distribution's version if `module` imports, else None."""
    try:
        importlib.import_module(module)
    except ImportError:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _ratio(name: str, value: float, baseline: float, limit: float, at_most: bool) -> dict:
    ratio = value / baseline if baseline > 0 else float("inf")
    return {f"fmpair_{name}": {"value": round(ratio, 3),
                               "target": f"{'<=' if at_most else '>='} {limit}",
                               "met": bool(ratio <= limit if at_most else ratio >= limit)}}


def _ratios(fm: dict, other: dict, row: str) -> dict:
    suffix = "lightfm" if row == "lightfm_bpr" else row
    return {**_ratio(f"fit_over_{suffix}", fm["fit_s"], other["fit_s"], TARGETS["fit"], True),
            **_ratio(f"precision_over_{suffix}", fm["precision_at_10"],
                     other["precision_at_10"], TARGETS["precision"], False)}


def _summary(runs: list[dict], pairs: int) -> dict:
    """Medians over the reps, every rep's fit seconds and precision, and for fmpair the
    split of its fit (medians) and the per-epoch numbers of its median-time rep."""
    fit = [r["fit_s"] for r in runs]
    out = {"fit_s": round(statistics.median(fit), 3),
           "fit_s_each": [round(s, 3) for s in fit],
           "pairs_per_s": round(pairs / statistics.median(fit)),
           "precision_at_10": round(statistics.median(r["precision_at_10"] for r in runs), 4),
           "precision_at_10_each": [r["precision_at_10"] for r in runs]}
    if "startup_s" in runs[0]:
        for key in ("startup_s", "training_s", "teardown_s"):
            out[key] = round(statistics.median(r[key] for r in runs), 3)
        out["training_pairs_per_s"] = round(pairs / out["training_s"])
        middle = sorted(runs, key=lambda r: r["fit_s"])[(len(runs) - 1) // 2]
        out.update(epoch_s=middle["epoch_s"], epoch_pairs_per_s=middle["epoch_pairs_per_s"],
                   final_loss=middle["final_loss"])
    return out


def movielens_shape(a: argparse.Namespace) -> None:
    reps = a.reps or (1 if a.quick else 3)
    n_users, n_items, epochs = ML_SHAPE["quick" if a.quick else "full"]
    started = time.perf_counter()
    data = make_synthetic(n_users=n_users, n_items=n_items, interactions_per_user=120,
                          test_fraction=0.2, seed=ML_SEED)
    pairs = data.train.nnz * epochs
    log(f"data: {n_users} users, {n_items} items, {data.train.nnz} training positives, "
        f"{data.test.nnz} test positives")
    versions = {"lightfm": _installed("lightfm", "lightfm"),
                "implicit": _installed("implicit.cpu.bpr", "implicit")}
    rows = {"fmpair": lambda: ml_fmpair(data, epochs, a.shards)}
    if versions["lightfm"]:
        rows["lightfm_bpr"] = lambda: ml_lightfm(data, "bpr", epochs)
        rows["lightfm_warp"] = lambda: ml_lightfm(data, "warp", epochs)
    if versions["implicit"]:
        rows["implicit_bpr"] = lambda: ml_implicit(data, epochs)
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for rep in range(reps):
        for name, fit in rows.items():  # interleaved: every library once per rep
            runs[name].append(fit())
            r = runs[name][-1]
            log(f"rep {rep + 1}/{reps} {name}: fit {r['fit_s']:.2f} s"
                + (f" (startup {r['startup_s']:.2f}, training {r['training_s']:.2f}, "
                   f"teardown {r['teardown_s']:.2f})" if "startup_s" in r else "")
                + f", precision@10 {r['precision_at_10']}")
    models = {name: _summary(done, pairs) for name, done in runs.items()}

    if "lightfm_bpr" in models:
        baseline = "lightfm_bpr"
        note = "targets against LightFM with loss='bpr', the same loss as FMPair"
    elif "implicit_bpr" in models:
        baseline = "implicit_bpr"
        note = ("LightFM is not installed (see the module docstring for how to install "
                "it): the targets are computed against implicit's BPR instead, a stand-in "
                "with other defaults (learning rate 0.01, popularity-drawn negatives)")
    else:
        baseline = None
        note = ("neither LightFM nor implicit is installed: FMPair alone, no comparison "
                "(see the module docstring for how to install LightFM)")
    log(note)
    fm = models["fmpair"]
    result = {
        "benchmark": "fmpair",
        "mode": "movielens_shape",
        "machine": machine(),
        "config": {"quick": a.quick, "reps": reps, "epochs": epochs, "k": ML_DIMS,
                   "users": n_users, "items": n_items, "interactions_per_user": 120,
                   "test_fraction": 0.2, "seed": ML_SEED,
                   "train_pairs": int(data.train.nnz), "test_pairs": int(data.test.nnz),
                   "shards": a.shards, "threads": {"lightfm": 1, "implicit": 1},
                   "order": list(rows), "versions": versions},
        "baseline": baseline,
        "note": note,
        "popularity_precision_at_10": round(float(precision_at_k(
            popularity_scores(data.train), data.test, 10, train=data.train)), 4),
        "models": models,
        "targets": _ratios(fm, models[baseline], baseline) if baseline else {},
        "other_ratios": {k: v for row in models if row not in ("fmpair", baseline)
                         for k, v in _ratios(fm, models[row], row).items()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


def main() -> None:
    # --movielens-shape is this benchmark's own flag; `arguments` parses the shared ones
    mode = argparse.ArgumentParser(add_help=False)
    mode.add_argument("--movielens-shape", action="store_true")
    known, rest = mode.parse_known_args()
    sys.argv[1:] = rest
    a = arguments(__doc__, "small data, for a smoke test (< 60 s; with --movielens-shape "
                           "300 users x 500 items, 2 epochs, < 30 s)",
                  "timed epochs after the warm-up "
                   "(default 9, or 1 with --quick); every model trains reps + 1 epochs. "
                   "With --movielens-shape: fits per library (default 3, or 1 with --quick)")
    if known.movielens_shape:
        movielens_shape(a)
        return
    reps = a.reps or (1 if a.quick else 9)
    users, items = (2000, 1000) if a.quick else (10_000, 5000)

    started = time.perf_counter()
    data = make_synthetic(n_users=users, n_items=items, interactions_per_user=20.0, seed=0)
    space = FeatureSpace.build(data.n_users, data.n_items)
    log(f"data: {users} users, {items} items, {data.train.nnz} training positives")
    log(f"starting a LocalCluster with {a.shards} shards")
    with LocalCluster(shards=a.shards) as cluster:
        ps = run(parameter_server(cluster.address, space, data, reps))
    dims = {}
    for k in DIMS:
        imp = implicit_bpr(data, k, reps + 1)
        per_batch = {}
        for batch in BATCH_SIZES:
            r = ps[(k, batch)]
            r["fmpair_vs_implicit"] = round(r["efficient"]["pairs_per_s"] / imp["pairs_per_s"], 4)
            per_batch[str(batch)] = r
        dims[str(k)] = {"implicit": imp, "batch_size": per_batch}
    at64 = dims["64"]["batch_size"]
    result = {
        "benchmark": "fmpair",
        "machine": machine(),
        "config": {"quick": a.quick, "shards": a.shards, "reps": reps, "epochs": reps + 1,
                   "users": users, "items": items, "train_pairs": int(data.train.nnz),
                   "test_pairs": int(data.test.nnz), "loss": "bpr", "sampler": "uniform",
                   "step_size": STEP, "batches_in_flight": IN_FLIGHT,
                   "efficient_optimizer": "adagrad", "naive_optimizer": "sgd",
                   "implicit_threads": 1},
        "popularity_precision_at_10": round(float(precision_at_k(
            popularity_scores(data.train), data.test, 10, train=data.train)), 4),
        "k": dims,
        "targets": {
            "bytes_ratio_at_k64 (>= 10)": {b: at64[b]["bytes_ratio"] for b in at64},
            "fmpair_vs_implicit (>= 0.25)": {
                k: {b: d["batch_size"][b]["fmpair_vs_implicit"] for b in d["batch_size"]}
                for k, d in dims.items()}},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
