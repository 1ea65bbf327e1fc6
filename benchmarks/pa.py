"""Passive-aggressive (PA-I) on the parameter server versus scikit-learn and Vowpal Wabbit,
online on one stream of hashed messages, in one run.

Run (JSON on stdout, progress on stderr):

    python benchmarks/pa.py [--quick] [--shards 2] [--reps R] > pa.json

--quick (20,000 train + 5,000 test messages, R = 1) takes well under a minute on 2 cores
(10 s, 2.5 of them `requests`); the full run (200,000 + 20,000, R = 3) about two minutes
(133 s on 2 busy cores, 27 of them `requests`).
Vowpal Wabbit is optional (the `bench` extras); without it "vw" says it was skipped and
the ratios and the target that need it are left out (null).

data: `models.synthetic_text.make_messages(train + test, label_noise=0.05, seed=0)` with
its other defaults (2 classes, 20,000 words, ~20 words a message): the first `train`
messages are the stream, the rest the held-out test set. Each is hashed once with
`models.pa.hashing.hash_features(words, 18)` (2^18 signed buckets, FeatureHasher's hash)
and the stream cut into chunks of CHUNK = 4,096 consecutive messages, as a stream would
deliver them. Every method sees the same chunks in the same order, once (one pass: the
online setting). 4,096 so that batch_size 1,024 makes 4 batches per chunk: LocalPA deals
the batches of one partial_fit call round-robin to its num_workers workers, so a chunk
of at most one batch would leave the second worker idle. data.features_per_message:
nonzeros per hashed message (a repeated word's counts are summed into one bucket);
positive_share: the share of label 1 in the stream; `examples` below: how many examples
a method learned from (the stream, or a prefix of it).

Every method is run R times from scratch on the same stream (--reps), the methods taking
turns (rep 1 of each, then rep 2, ...) so that a busy moment of the machine hits them
alike, after an untimed warm-up of ours (one chunk) and of scikit-learn (two chunks).
examples_per_s is the median over the reps of examples / seconds, examples_per_s_reps
all of them, seconds the median; the accuracies are the first rep's (the same in every
rep for a deterministic method; with 2 workers, which are not, held_out_accuracy_reps
lists every rep's). machine.loadavg_1m / loadavg_1m_end: the load at the start and the
end (the machine may be shared: compare runs with care).

- hashing: messages_per_s of `hash_features` and of scikit-learn's
  `FeatureHasher(2**18, input_type="string").transform` on the train messages, over the
  whole list at once (`whole`, median of R) and chunk by chunk (`chunked`, one pass, the
  stream's way), after an untimed chunked pass; tokens_per_s the same in words.
  identical: the two give the same CSR.
- ours_b{B}_w{W}: `LocalPA(variant="pa1", C=1.0, hash_bits=18, batch_size=B,
  num_workers=W)`, its other parameters its defaults (mixing "average": the workers'
  deltas divided by W); ours_b{B}_w2_add the same with mixing="add" (deltas summed,
  Hogwild). staleness: the held-out accuracy of one worker, two averaging and two
  adding, per batch size: what a batch learned from stale weights costs. On one LocalCluster
  (--shards shards) started once, before any clock, each run a fresh model on it
  (created at its first partial_fit, inside the timed region), fed the hashed chunks
  through `fit_stream(chunks, classes=[0, 1])`.
  seconds: that loop; examples_per_s = examples / seconds. examples_per_s_with_hashing
  = examples / (seconds + examples / hashing.ours.chunked.messages_per_s): words in.
  progressive_accuracy: per example, predicted with the weights just before it is
  learned from (for W = 2: its batch's pulled weights plus that batch's own updates so
  far; the other worker's concurrent batch is not in them).
  held_out_accuracy: `model.score` on the test set after the pass. bytes_per_example:
  bytes_in + bytes_out of every shard's client connections (frames included; each
  shard's `stats` op, as benchmarks/mf_sgd.py reads it) over the pass (first rep, the
  test scoring not included) / examples: the pulls of each batch's active rows and the
  pushes of its changed rows. B = 1 is latency-bound (a pull and a push per example), so
  it learns only a prefix of the stream (`examples`: 5 chunks, 20,480; quick 1 chunk):
  its held-out accuracy is after that prefix and not comparable with the others'. With
  one worker the batch size does not change what is learned, so every W = 1 run's
  prefix_progressive_accuracy (its progressive accuracy over B = 1's prefix) should equal
  B = 1's progressive_accuracy. fit_stream's numbers are used as they come.
- sklearn: `SGDClassifier(loss="hinge", penalty=None, learning_rate="pa1", eta0=1.0,
  shuffle=False)` (PA-I, the same update, sequential within a call) with `partial_fit`
  on the same hashed float32 CSR chunks, classes=[0, 1] on every call; `sklearn_b64`
  the same fed 64 rows at a time (each chunk sliced inside the timed loop): the same
  weights at the end, finer progressive validation. progressive_accuracy is at the
  granularity of a call: each piece (a chunk, or 64 rows) is predicted with `predict`
  before `partial_fit` learns it (the first piece as all-zero weights predict it: class
  0), coarser than ours (per example). seconds / examples_per_s: the predict +
  partial_fit loop; examples_per_s_learn_only counts only the partial_fit calls (the
  rate the ratios use: scikit-learn's fastest). examples_per_s_with_hashing as ours
  (seconds with the predicts), with FeatureHasher's chunked rate.
  progressive_granularity: the piece size. Note: on SPARSE input scikit-learn multiplies
  every intercept update by 0.01 (sklearn.linear_model._base.SPARSE_INTERCEPT_DECAY),
  ours does not (it matches scikit-learn on dense input to 1e-6), so the two learn
  slightly different intercepts and weights. sklearn_dense_intercept: one chunked run
  with that private constant set to 1.0 (as on dense input), and max_abs_coef_diff /
  intercept_diff against ours_b1024_w1's weights after its first pass: what the
  intercept decay alone accounts for.
- vw_default / vw_sgd: vowpalwabbit's Workspace, single process, online, each example
  learned once in the stream's order, as text "1 | w3 w17 ..." (labels -1 / +1, the words
  as features of the default namespace; VW hashes them itself into 2^18 weights). Flags,
  each with "-b 18 --binary --quiet": default "--loss_function hinge" (VW's default
  adaptive, normalized, invariant update, learning rate 0.5, with a constant feature);
  sgd "--loss_function hinge --sgd" (plain SGD, its default decaying rate). --binary
  only turns predictions into ±1 and the loss VW sums into 0/1 (learning is unchanged):
  progressive_accuracy = 1 - `get_sum_loss()` / examples, VW's own progressive
  validation, each example predicted inside `learn` just before its update.
  examples_per_s: the learn loop including building each chunk's strings from the word
  lists (words in); examples_per_s_prebuilt (and _reps): separate runs, R of them, with
  every string built before the clock. held_out_accuracy: the sign of `predict` on each
  test message's string (no label).
- baselines: majority (the test accuracy of always predicting the training majority
  class) and true_labels (the test accuracy of the labels before noise: about the best
  a classifier can do, ~0.975 with 5% label noise, half of it drawing the same class).
- ratios: for each ours run, *_vs_sklearn_examples_per_s = its examples_per_s /
  sklearn's examples_per_s_learn_only; *_vs_vw_examples_per_s = its examples_per_s /
  vw_default's examples_per_s_prebuilt (each from its ready input: hashed CSR, text);
  *_with_hashing_vs_vw_examples_per_s = its examples_per_s_with_hashing / vw_default's
  examples_per_s (both from word lists); *_held_out_accuracy_minus_sklearn / _minus_vw:
  held-out accuracy differences (not for B = 1, which learns a prefix).
- requests: what a learner sends per mini-batch, each request timed alone as
  benchmarks/pullpush.py times one-row pulls (common.request_figures), on the same
  LocalCluster after the runs above, through one AsyncClient, with the learner's own
  calls (models.pa.worker), on a model named "pa-requests" that a `LocalPA` (PA-I, C,
  hash_bits as above, master = that cluster) creates and learns the stream's first
  chunk into (then `close()`: a named model stays on an external cluster). Mini-batches
  of B = 1 and B = 64 consecutive examples of the stream after that chunk, labels as
  class indices:
  b{B}_learn_batch: `Learner.learn(X, labels, B, range(b, b + 1))`, what a learner does
  per mini-batch: the batch's CSR slice, the pull of its active features and the
  intercept row, the PA kernel inline, the push of the changed rows' deltas (add; no
  push when every example is passive) — two round trips; it learns, going through the
  stream's batches in order (`batches` of them, cycled when the calls outnumber them).
  b{B}_pull: that pull alone (`worker._pull_active`: np.unique of the batch's features,
  pull_rows); b{B}_predict: `worker.pull_margins` (decision_function / predict / score
  while attached: that pull, then the margins kernel); both over the first `batches`
  batches (256, quick 32), cycled. b{B}_push: that push alone (`push_rows` of the rows
  and deltas learn_batch would push, computed once per batch from the weights after the
  first chunk), over those of the batches with something to push (`batches`;
  passive_batches: those without).
  seconds: the measurement's time (starting the raw server and the echo, preparing the
  batches; not the first chunk's partial_fit). For each request: batch_size, batches,
  rows_pulled_mean / rows_pushed_mean (rows per pull / push, the intercept row included),
  payload_bytes: [the arrays' bytes of each round trip, both ways: the row indices
  (int64) and the float32 weights; means over the first 256 (quick 32) batches], headers
  not counted; us: p50/p99 µs of `rounds` calls (1,000, quick 100) after `warmup_rounds`
  (100, quick 20), in rounds that also make one raw socket round trip (raw_socket_rtt_us:
  benchmarks/pullpush.py's RawSocket, a child process that sends 256 bytes back for each
  8-byte request), one uvloop echo (uvloop_echo_rtt_us: common.UvloopEcho, 256 bytes) and
  each request's raw mirror (raw_same_bytes_us: one raw request per round trip of it,
  each bringing that trip's payload_bytes back), the steps taking turns at going first;
  p50_over_raw_rtt = us.p50 / raw_socket_rtt_us.p50, p50_over_raw_same_bytes = us.p50 /
  raw_same_bytes_us.p50. pipelined_ops_per_s[W]: `pipelined_calls` calls (2,048, quick
  128) from the one AsyncClient, W at a time (asyncio.gather of W, then the next W), W =
  1, 16, 64; raw_pipelined_ops_per_s[W]: the raw socket, W requests of a trip's
  payload_bytes at once (RawSocket.pipelined), once per trip; the two alternate by halves
  (raw, ours, raw, ours).
- targets (the issue's, for ours_b1024_w1, reported, not tuned for):
  meets_accuracy_target = its held-out accuracy >= sklearn's (chunked);
  meets_throughput_target = its examples_per_s_with_hashing >= vw_default's
  examples_per_s (words in on both sides; null without VW).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Callable

import numpy as np

from common import Request, arguments, log, machine, request_figures
from models.pa import LocalPA
from models.pa.hashing import hash_features
from models.synthetic_text import make_messages

SEED, HASH_BITS, C, VARIANT, LABEL_NOISE, CHUNK = 0, 18, 1.0, "pa1", 0.05, 4096
# (batch_size, num_workers, mixing): with 2 workers, both ways of combining their pushes
OURS = ((1, 1, "average"), (64, 1, "average"), (1024, 1, "average"), (64, 2, "average"),
        (1024, 2, "average"), (64, 2, "add"), (1024, 2, "add"))


def run_name(batch: int, workers: int, mixing: str) -> str:
    return f"ours_b{batch}_w{workers}" + ("_add" if mixing == "add" else "")
VW_FLAGS = {"default": "--loss_function hinge", "sgd": "--loss_function hinge --sgd"}
VW_COMMON = f"-b {HASH_BITS} --binary --quiet"
VW_MISSING = "vowpalwabbit is not installed (pip install -e '.[bench]')"
Run = Callable[[int], dict]  # one run of a method's stream from scratch, given the rep
REQUEST_BATCHES = (1, 64)  # `requests`: the batch sizes timed


def summary(runs: list[dict]) -> dict:
    """The first run's numbers, with the median rate and seconds over all runs."""
    out = {k: v for k, v in runs[0].items() if k not in ("model", "learn_seconds")}
    rates = [r["examples"] / r["seconds"] for r in runs]
    out["examples_per_s"] = round(statistics.median(rates))
    out["examples_per_s_reps"] = [round(r) for r in rates]
    out["seconds"] = round(statistics.median(r["seconds"] for r in runs), 4)
    if "learn_seconds" in runs[0]:
        out["examples_per_s_learn_only"] = round(statistics.median(
            r["examples"] / r["learn_seconds"] for r in runs))
    held = [r["held_out_accuracy"] for r in runs]
    if len(set(held)) > 1:
        out["held_out_accuracy_reps"] = held
    return out


def hashing(words: list, reps: int) -> dict:
    from sklearn.feature_extraction import FeatureHasher
    hasher = FeatureHasher(1 << HASH_BITS, input_type="string")
    tokens = sum(len(w) for w in words)
    out = {}
    for name, fn in (("ours", lambda w: hash_features(w, HASH_BITS)),
                     ("sklearn", hasher.transform)):
        for i in range(0, len(words), CHUNK):  # warm-up: numba's cache, the allocator
            fn(words[i:i + CHUNK])
        whole = []
        for _ in range(reps):
            began = time.perf_counter()
            fn(words)
            whole.append(time.perf_counter() - began)
        began = time.perf_counter()
        for i in range(0, len(words), CHUNK):
            fn(words[i:i + CHUNK])
        chunked = time.perf_counter() - began
        out[name] = {kind: {"seconds": round(s, 4), "messages_per_s": round(len(words) / s),
                            "tokens_per_s": round(tokens / s)}
                     for kind, s in (("whole", statistics.median(whole)), ("chunked", chunked))}
        log(f"hashing, {name}: {len(words) / chunked:,.0f} messages/s chunked, "
            f"{len(words) / statistics.median(whole):,.0f} at once")
    out["identical"] = bool((hash_features(words, HASH_BITS) != hasher.transform(words)).nnz == 0)
    return out


def shard_bytes(client) -> int:
    """bytes_in + bytes_out over every shard, from its `stats` op."""
    total = 0
    for server in client.status()["servers"]:
        stats = client.run(client.aio.request(server["address"], "stats",
                                              shard=server["name"])).args
        total += stats["bytes_in"] + stats["bytes_out"]
    return total


def ours(address: str, client, chunks: list, test: tuple, batch: int, workers: int,
         mixing: str, prefix: int, keep: dict | None) -> Run:
    def once(rep: int) -> dict:
        model = LocalPA(variant=VARIANT, C=C, hash_bits=HASH_BITS, batch_size=batch,
                        num_workers=workers, mixing=mixing, seed=SEED, master=address,
                        show_progress=False)
        before = shard_bytes(client) if rep == 0 else 0
        began = time.perf_counter()
        steps = list(model.fit_stream(chunks, classes=[0, 1]))
        seconds = time.perf_counter() - began
        moved = shard_bytes(client) - before if rep == 0 else 0
        n = sum(s["examples"] for s in steps)
        result = {"examples": n, "seconds": seconds,
                  "progressive_accuracy": round(steps[-1]["progressive_accuracy"], 5),
                  "held_out_accuracy": round(model.score(*test), 5)}
        if len(steps) >= prefix:
            result["prefix_progressive_accuracy"] = round(
                steps[prefix - 1]["progressive_accuracy"], 5)
        if rep == 0:
            result["bytes_per_example"] = round(moved / n, 1)
        model.close()
        if rep == 0 and keep is not None:
            keep.update(coef=model.coef_.ravel(), intercept=float(model.intercept_[0]))
        return result
    return once


def sklearn(chunks: list, test: tuple, piece: int | None) -> Run:
    from sklearn.linear_model import SGDClassifier

    def once(rep: int) -> dict:
        model = SGDClassifier(loss="hinge", penalty=None, learning_rate="pa1", eta0=C,
                              shuffle=False, random_state=SEED)
        wrong, learning, n, first = 0, 0.0, 0, True
        began = time.perf_counter()
        for X, y in chunks:
            for i in range(0, X.shape[0], piece or X.shape[0]):
                Xp, yp = (X[i:i + piece], y[i:i + piece]) if piece else (X, y)
                wrong += int(np.count_nonzero(yp) if first else (model.predict(Xp) != yp).sum())
                start = time.perf_counter()
                model.partial_fit(Xp, yp, classes=[0, 1])
                learning += time.perf_counter() - start
                n, first = n + yp.size, False
        seconds = time.perf_counter() - began
        return {"examples": n, "seconds": seconds, "learn_seconds": learning,
                "progressive_accuracy": round(1 - wrong / n, 5),
                "progressive_granularity": piece or CHUNK,
                "held_out_accuracy": round(model.score(*test), 5), "model": model}
    return once


def sklearn_dense_intercept(chunks: list, test: tuple, keep: dict) -> dict:
    """One chunked run with the sparse intercept decay set to 1.0 (a private constant)."""
    from sklearn.linear_model import _base
    if not hasattr(_base, "SPARSE_INTERCEPT_DECAY"):
        return {"skipped": "sklearn.linear_model._base.SPARSE_INTERCEPT_DECAY is gone"}
    saved, _base.SPARSE_INTERCEPT_DECAY = _base.SPARSE_INTERCEPT_DECAY, 1.0
    try:
        run = sklearn(chunks, test, None)(0)
    finally:
        _base.SPARSE_INTERCEPT_DECAY = saved
    out, model = summary([run]), run["model"]
    out["max_abs_coef_diff"] = float(f"{np.abs(model.coef_.ravel() - keep['coef']).max():.3g}")
    out["intercept_diff"] = float(f"{float(model.intercept_[0]) - keep['intercept']:.3g}")
    return out


def vw_lines(words: list, labels: np.ndarray) -> list[str]:
    return [("1 | " if y else "-1 | ") + " ".join(m) for m, y in zip(words, labels.tolist())]


def vw(flags: str, words: list, labels: np.ndarray, test: tuple, prebuilt: bool) -> Run:
    import vowpalwabbit
    built = vw_lines(words, labels) if prebuilt else None
    test_lines = ["| " + " ".join(m) for m in test[0]]

    def once(rep: int) -> dict:
        ws = vowpalwabbit.Workspace(f"{flags} {VW_COMMON}")
        began = time.perf_counter()
        if built is not None:
            for s in built:
                ws.learn(s)
        else:
            for i in range(0, len(words), CHUNK):
                for s in vw_lines(words[i:i + CHUNK], labels[i:i + CHUNK]):
                    ws.learn(s)
        seconds = time.perf_counter() - began
        progressive = 1 - ws.get_sum_loss() / len(words)  # read before predict adds to it
        predicted = np.array([ws.predict(s) for s in test_lines]) > 0
        ws.finish()
        return {"examples": len(words), "seconds": seconds,
                "progressive_accuracy": round(progressive, 5),
                "held_out_accuracy": round(float(np.mean(predicted == (test[1] == 1))), 5)}
    return once


def requests(address: str, X, labels: np.ndarray, quick: bool) -> dict:
    """A learner's requests per mini-batch, each timed alone beside a raw round trip and
    the uvloop echo (common.request_figures), on the benchmark's cluster."""
    from psframework import AsyncClient
    from models.pa.kernels import VARIANTS, learn
    from models.pa.worker import TABLE, Learner, _pull_active, _slice, pull_margins
    name, n_features = "pa-requests", 1 << HASH_BITS
    # the model as LocalPA creates it, then learns a first chunk (a named model on an
    # external cluster stays there after close())
    first = LocalPA(variant=VARIANT, C=C, hash_bits=HASH_BITS, master=address, name=name,
                    show_progress=False)
    first.partial_fit(X[:CHUNK], labels[:CHUNK], classes=[0, 1])
    first.close()
    X, labels = X[CHUNK:], labels[CHUNK:].astype(np.int64)  # class indices, as Classes gives

    async def batch_requests(client: AsyncClient, learner: Learner, B: int) -> dict[str, Request]:
        stream = X.shape[0] // B  # batches learn_batch goes through, cycled
        n = min(32 if quick else 256, stream)  # batches the other requests cycle through
        parts = [_slice(X, b * B, (b + 1) * B) for b in range(n)]
        scored = [X[b * B:(b + 1) * B] for b in range(n)]
        pushes, pulled, pushed, pulled_rows, pushed_rows = [], [], [], [], []
        variant = VARIANTS.index(VARIANT)
        for b, (indptr, indices, data) in enumerate(parts):  # the push learn_batch would make
            rows, W, cols = await _pull_active(client, name, n_features, indices)
            before = W.copy()
            learn(indptr, cols, data, labels[b * B:(b + 1) * B], W, variant, C, True)
            changed = np.flatnonzero((W - before).any(axis=1))
            pulled.append(rows.nbytes + W.nbytes)
            pulled_rows.append(rows.size)
            if changed.size:
                pushes.append((rows[changed], (W - before)[changed]))
                pushed.append(pushes[-1][0].nbytes + pushes[-1][1].nbytes)
                pushed_rows.append(changed.size)
        pull_trip, push_trip = round(np.mean(pulled)), round(np.mean(pushed))
        info = {"batch_size": B, "batches": n}
        rows_info = {"rows_pulled_mean": round(np.mean(pulled_rows), 1),
                     "rows_pushed_mean": round(np.mean(pushed_rows), 1)}
        return {
            f"b{B}_learn_batch": Request(
                lambda i: learner.learn(X, labels, B, range(i % stream, i % stream + 1)),
                (pull_trip, push_trip), {**info, "batches": stream, **rows_info}),
            f"b{B}_pull": Request(
                lambda i: _pull_active(client, name, n_features, parts[i % n][1]),
                (pull_trip,), {**info, "rows_pulled_mean": rows_info["rows_pulled_mean"]}),
            f"b{B}_push": Request(
                lambda i: client.push_rows(name, TABLE, *pushes[i % len(pushes)]),
                (push_trip,), {**info, "batches": len(pushes),
                               "passive_batches": n - len(pushes),
                               "rows_pushed_mean": rows_info["rows_pushed_mean"]}),
            f"b{B}_predict": Request(
                lambda i: pull_margins(client, name, n_features, scored[i % n], True),
                (pull_trip,), {**info, "rows_pulled_mean": rows_info["rows_pulled_mean"]})}

    async def prepare(client: AsyncClient) -> dict[str, Request]:
        learner = Learner(client, name, n_features, variant=VARIANT, C=C, fit_intercept=True)
        out: dict[str, Request] = {}
        for B in REQUEST_BATCHES:
            out.update(await batch_requests(client, learner, B))
        return out

    log("requests: on the benchmark's LocalCluster")
    return request_figures(address, prepare, quick)


def main() -> int:
    args = arguments(__doc__, "20,000 + 5,000 messages, one rep, for CI",
                     "runs of every method's stream, from scratch (default 3, quick 1)")
    reps = args.reps or (1 if args.quick else 3)
    n_train, n_test, prefix = (20_000, 5_000, 1) if args.quick else (200_000, 20_000, 5)
    data = make_messages(n_train + n_test, label_noise=LABEL_NOISE, seed=SEED)
    words, labels, test_labels = data.words[:n_train], data.labels[:n_train], data.labels[n_train:]
    X = hash_features(data.words, HASH_BITS)
    train_X, test = X[:n_train], (X[n_train:], test_labels)
    chunks = [(train_X[i:i + CHUNK], labels[i:i + CHUNK]) for i in range(0, n_train, CHUNK)]
    log(f"data: {n_train} train, {n_test} test messages, {X.nnz / X.shape[0]:.1f} "
        f"features each; {len(chunks)} chunks of {CHUNK}; {reps} reps")
    majority = int(np.mean(labels) >= 0.5)
    out: dict = {"benchmark": "pa", "machine": machine(), "config": {
        "quick": args.quick, "reps": reps, "shards": args.shards, "seed": SEED,
        "variant": VARIANT, "C": C, "hash_bits": HASH_BITS, "chunk": CHUNK,
        "ours": [{"batch_size": b, "num_workers": w, "mixing": m} for b, w, m in OURS],
        "batch_1_prefix_examples": min(prefix * CHUNK, n_train), "vw_flags": {
            k: f"{v} {VW_COMMON}" for k, v in VW_FLAGS.items()}},
        "data": {"train": n_train, "test": n_test, "label_noise": LABEL_NOISE,
                 "generator": "models.synthetic_text.make_messages, its other defaults",
                 "features_per_message": round(X.nnz / X.shape[0], 2),
                 "positive_share": round(float(np.mean(labels)), 4)},
        "baselines": {
            "majority": round(float(np.mean(test_labels == majority)), 5),
            "true_labels": round(float(np.mean(data.true_labels[n_train:] == test_labels)), 5)}}
    out["hashing"] = h = hashing(words, reps)

    from psframework import Client, LocalCluster
    keep: dict = {}
    with LocalCluster(args.shards) as cluster, Client(cluster.address) as client:
        runs: dict[str, Run] = {}
        for batch, workers, mixing in OURS:
            runs[run_name(batch, workers, mixing)] = ours(
                cluster.address, client, chunks[:prefix] if batch == 1 else chunks, test,
                batch, workers, mixing, prefix, keep if (batch, workers) == (1024, 1) else None)
        runs["sklearn"], runs["sklearn_b64"] = sklearn(chunks, test, None), sklearn(chunks, test, 64)
        try:
            import vowpalwabbit  # noqa: F401
            for key, flags in VW_FLAGS.items():
                for prebuilt in (False, True):
                    runs[f"vw_{key}" + "_prebuilt" * prebuilt] = vw(
                        flags, words, labels, (data.words[n_train:], test_labels), prebuilt)
        except ImportError:
            log(f"vw: skipped, {VW_MISSING}")
        warm = LocalPA(batch_size=64, num_workers=2, master=cluster.address, show_progress=False)
        list(warm.fit_stream(chunks[:1], classes=[0, 1]))  # warm-up: numba, connections
        warm.close()
        sklearn(chunks[:2], test, None)(0)
        results: dict[str, list[dict]] = {name: [] for name in runs}
        for rep in range(reps):  # methods take turns, so a busy moment hits them alike
            for name, run in runs.items():
                log(f"{name}, rep {rep + 1}/{reps}")
                r = run(rep)
                results[name].append(r)
                log(f"  {r['examples'] / r['seconds']:,.0f} examples/s, progressive "
                    f"{r['progressive_accuracy']:.4f}, held-out {r['held_out_accuracy']:.4f}")
        per_request = requests(cluster.address, train_X, labels, args.quick)
    for name, rs in results.items():
        if name.endswith("_prebuilt"):
            vw_out = out[name[:-len("_prebuilt")]]
            vw_out["examples_per_s_prebuilt"] = summary(rs)["examples_per_s"]
            vw_out["examples_per_s_prebuilt_reps"] = summary(rs)["examples_per_s_reps"]
            continue
        out[name] = summary(rs)
        if name.startswith("vw_"):
            out[name] = {"flags": f"{VW_FLAGS[name[3:]]} {VW_COMMON}", **out[name]}
        else:
            hashed = h["sklearn" if name.startswith("sklearn") else "ours"]["chunked"]
            out[name]["examples_per_s_with_hashing"] = round(out[name]["examples"] / (
                out[name]["seconds"] + out[name]["examples"] / hashed["messages_per_s"]))
    if "vw_default" not in out:
        out["vw"] = {"skipped": VW_MISSING}
    log("sklearn_dense_intercept")
    out["sklearn_dense_intercept"] = sklearn_dense_intercept(chunks, test, keep)

    ratios: dict = {}
    sk, vw_ = out["sklearn"], out.get("vw_default")
    for batch, workers, mixing in OURS:
        name = run_name(batch, workers, mixing)
        r = out[name]
        ratios[f"{name}_vs_sklearn_examples_per_s"] = round(
            r["examples_per_s"] / sk["examples_per_s_learn_only"], 3)
        if vw_:
            ratios[f"{name}_vs_vw_examples_per_s"] = round(
                r["examples_per_s"] / vw_["examples_per_s_prebuilt"], 3)
            ratios[f"{name}_with_hashing_vs_vw_examples_per_s"] = round(
                r["examples_per_s_with_hashing"] / vw_["examples_per_s"], 3)
        if batch > 1:
            ratios[f"{name}_held_out_accuracy_minus_sklearn"] = round(
                r["held_out_accuracy"] - sk["held_out_accuracy"], 5)
            if vw_:
                ratios[f"{name}_held_out_accuracy_minus_vw"] = round(
                    r["held_out_accuracy"] - vw_["held_out_accuracy"], 5)
    out["ratios"] = ratios
    out["staleness"] = {  # held-out accuracy: one worker, two averaging, two adding
        f"batch_{b}": {k: out[run_name(b, *w)]["held_out_accuracy"] for k, w in (
            ("one_worker", (1, "average")), ("two_average", (2, "average")),
            ("two_add", (2, "add")))} for b in (64, 1024)}
    target = out["ours_b1024_w1"]
    out["targets"] = {
        "run": "ours_b1024_w1",
        "meets_accuracy_target": target["held_out_accuracy"] >= sk["held_out_accuracy"],
        "meets_throughput_target": (target["examples_per_s_with_hashing"] >= vw_["examples_per_s"]
                                    if vw_ else None)}
    out["requests"] = per_request
    out["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
