"""LDA on the parameter server versus pyspark.ml's LDA (EM and online), gensim and the
`lda` package, every system scored by one evaluator on the same held-out documents.

Run (JSON on stdout, progress on stderr):

    cd benchmarks && python lda.py [--quick] [--shards 2] [--reps R] [--beta B] > lda.json
    cd benchmarks && python lda.py --scale [--quick] > lda_scale.json

--quick (k = 10, 20 iterations, a 1,000-document synthetic corpus) takes about two
minutes on 2 cores, half of it starting Spark and warming it up; the full run (k = 20,
100 iterations, 3,000 synthetic documents, R = 1) about four. gensim and the `lda`
package are optional (the `bench` extras): without them their entries say they were
skipped, and without the `lda` package the Reuters corpus is skipped too (it ships it).
--scale runs only the scale section below (about 3 minutes on 2 cores; --scale --quick
half a minute).

corpora (each split the same way for every system: a seeded HELD_OUT = 20% of the
documents, by a permutation of seed 0, are held out; the rest are the training corpus):
- reuters: the `lda` package's sample of Reuters news (`lda.datasets.load_reuters()`,
  395 documents × 4,258 words, 84,010 tokens), as int64 CSR counts.
- synthetic: `models.synthetic_topics.make_corpus(n, vocabulary=V, topics=k,
  doc_length=100, seed=0)` with its other defaults (α = 0.1 true mixtures, topics with
  separation 0.8); full n = 3,000, V = 5,000; quick n = 1,000, V = 2,000. truth: the
  held-out score of the true topics with the true α (the floor a model can hope for).
data per corpus: documents, vocabulary, train_docs / test_docs, train_tokens,
held_tokens (what completion scores).

Every system learns k topics with α = ALPHA = 0.1 and β = BETA (--beta, default 0.1:
MLlib's default topic concentration, 1.1 in EM's parametrisation) (in each system's own
parametrisation, below) for N iterations (full 100, quick 20; --reps R runs each R
times, default 1, the systems taking turns, rep 1 of each then rep 2, so a busy moment of
the machine hits them alike). Its learned topics (k × V, rows normalized) and its own α
are then scored by `models.lda.evaluate.completion_perplexity(test, topics, α, seed=0)`:
each held-out document's tokens split in halves (a seeded permutation per document), θ
folded in on the first half with the topics fixed (deterministic EM, 100 rounds at
most), the second half scored; perplexity = exp(-log-likelihood / held tokens); lower is
better. Per system: fit_s (the median over the reps of the timed fit, input already in
the system's form), fit_s_reps, tokens_per_s = train_tokens × passes / fit_s (passes:
full sweeps over the training tokens, below), held_out_perplexity (median over reps)
and held_out_perplexity_reps, alpha_scored (the α given to the fold-in), and on the
synthetic corpus topic_hellinger_mean / _max: `match_topics` against the true topics
(0: recovered; two true topics are ~0.85 apart).

- psframework: `models.lda.LocalLDA(k, alpha=0.1, beta=β, iterations=N,
  sampler="mh", mh_steps=2, num_workers=2, num_shards=--shards, seed=0,
  evaluate_every=N)` (the training perplexity only after the last iteration) on its
  embedded cluster (servers as threads, started inside fit). fit_s: the whole `fit`
  (cluster start and stop, model creation, the initial assignment, every iteration, the
  final pull). sampling_s: Σ of history_'s iteration seconds; iteration_tokens_per_s: the
  median over iterations after the first of history_'s tokens_per_s. training_perplexity
  and log_likelihood: history_'s last. topics: `topic_word_`; α scored: 0.1. passes = N.
  An untimed 2-iteration fit before the first rep compiles its kernels.
  psframework_exact: the same with sampler="exact" (the O(k) conditional, cheaper than
  Metropolis-Hastings while k is small).
- mllib_em: pyspark.ml's `LDA(k, maxIter=N, optimizer="em", docConcentration=[1.1],
  topicConcentration=1 + β, checkpointInterval=10, seed=0)` on local[2] (2 partitions of
  the cached training DataFrame, UI off, a checkpoint directory set: without one EM's
  lineage overflows the stack). MLlib's EM computes MAP estimates and requires both
  concentrations > 1: its E-step weighs (N_wk + η - 1)(N_dk + α - 1), so α_MLlib = 1 +
  0.1 and η_MLlib = 1 + β are our α and β. topicsMatrix() gives EM's expected counts
  N_wk (V × k); the topics scored are EM's own (N_wk + η_MLlib - 1) / (N_k + V(η_MLlib -
  1)), i.e. the counts plus β, normalized per topic, and α scored is
  docConcentration - 1 = 0.1 (the fold-in's posterior mean (n + 0.1) / (L + 0.1k) is
  EM's MAP θ). passes = N. topics_matrix_sum: the sum of topicsMatrix(), train_tokens
  for EM's counts (a check that they are counts; for online it is Σλ).
- mllib_online: the same estimator with optimizer="online", docConcentration=[0.1],
  topicConcentration=β, optimizeDocConcentration=False (α stays ours, as for every
  system), subsamplingRate=1.0 (each iteration one mini-batch of the whole corpus, so N
  iterations are N passes, as ours; MLlib's default 0.05 would see 5% per iteration: on
  Reuters at k = 20 and 100 iterations it scores 2,259 where 1.0 scores 2,026, taking
  half the time), learningOffset and learningDecay its defaults (1024, 0.51). topics:
  topicsMatrix() (λ, V × k) normalized; α scored: 0.1. passes = N.
  Both Spark systems run in one SparkSession, started before any clock (spark_start_s:
  the session, the training DataFrames, the warm-up, in seconds) with one untimed
  2-iteration fit of each optimizer on the first corpus (the JVM's JIT warm-up: the
  first EM fit otherwise takes twice as long). fit_s: `estimator.fit(df)` on the
  training DataFrame (id, features: a SparseVector of counts per document),
  cached and counted before the clock.
- gensim: `gensim.models.LdaModel(corpus, num_topics=k, passes=N, iterations=50,
  alpha=0.1, eta=β, chunksize=2000, update_every=1, random_state=0)` over
  `Sparse2Corpus(train)` (online variational Bayes, a mini-batch of up to 2,000
  documents per update: one update per pass on Reuters and the quick synthetic corpus,
  two on the full one; iterations: per-document E-step rounds, gensim's default),
  id2word of all V words.
  topics: get_topics(); α scored: model.alpha (0.1 per topic). passes = N.
- lda_package: the `lda` package's `LDA(k, n_iter=N, alpha=0.1, eta=β,
  random_state=0)`, collapsed Gibbs sampling with the exact O(k) conditional on one core
  (Cython): the reference for what psframework's sampler computes. topics:
  topic_word_; α scored: 0.1. passes = N.

A baseline that fails says so ("error") and the others go on; psframework's failure
stops the run. ratios (per corpus, when both sides ran): *_vs_mllib_em_perplexity = the system's
held-out perplexity / mllib_em's (below 1: better), *_vs_mllib_em_time = its fit_s /
mllib_em's. target (issue 15): psframework's held-out perplexity <= mllib_em's at <= 1/5
of its fit time: perplexity_met, time_met, met (both), with the numbers.

scale (--scale): psframework alone on a synthetic corpus of >= 10M tokens (quick: 1M)
and a 100,000-word vocabulary (quick 20,000): `make_corpus(100_000, vocabulary=100_000,
topics=1_000, doc_length=100, seed=0)` (quick 10,000 documents, 20,000 words, 100
topics), on a LocalCluster of --shards shard processes started here, for k = 100 and
1,000: `LocalLDA(k, sampler="mh", iterations=SCALE_ITERATIONS (5, quick 3),
evaluate_every=0, num_workers=2, master=that cluster, name=...)` (named, so the model
outlives fit and its partitions can be read; destroyed after). Per k: fit_s,
iteration_s (each iteration's seconds from history_), s_per_iteration (the median over
iterations after the first, which builds the alias tables from the first counts),
tokens_per_s (median of history_'s after the first), shard_partition_mb (each shard's
`stats` op: the bytes of the model's partitions on it; the word-topic counts are
V × k int32), shard_rss_mb (its `stats` rss after the fit), peak_rss_mb (sampled every
0.1 s during the fit: driver = this process, with the workers' tokens and assignments;
ps_shards = the shard processes summed). ratio_1000_vs_100 = s_per_iteration(1,000) /
s_per_iteration(100): the Metropolis-Hastings sampler costs O(1) per token in k, so the
target is flat (1.0); flat_within_1_5x says whether it is at most 1.5.

machine.loadavg_1m / loadavg_1m_end: the load at the start and the end (the machine may
be shared: compare runs with care).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import scipy.sparse as sp

from common import arguments, log, machine, spark_session
from procs import MB, Peaks, tree_rss
from models.lda.evaluate import completion_perplexity
from models.synthetic_topics import make_corpus, match_topics

SEED, ALPHA, BETA, HELD_OUT = 0, 0.1, 0.1, 0.2
FULL = {"k": 20, "iterations": 100, "synthetic": {"n_docs": 3000, "vocabulary": 5000}}
QUICK = {"k": 10, "iterations": 20, "synthetic": {"n_docs": 1000, "vocabulary": 2000}}
SCALE = {False: {"n_docs": 100_000, "vocabulary": 100_000, "topics": 1000, "iterations": 5},
         True: {"n_docs": 10_000, "vocabulary": 20_000, "topics": 100, "iterations": 3}}
SCALE_KS = (100, 1000)

Fit = Callable[[sp.csr_matrix], dict]  # train -> {"seconds", "topics", "alpha", ...}


def lda_package():
    """The `lda` package: this file is lda.py too, and its folder comes first on sys.path."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if getattr(sys.modules.get("lda"), "__file__", None) == os.path.abspath(__file__):
        del sys.modules["lda"]
    try:
        import lda
        import lda.datasets
        return lda
    finally:
        sys.path[:] = saved


def missing(package: str, error: Exception) -> dict:
    return {"skipped": f"{package} is not installed ({error}); pip install -e '.[bench]'"}


# -- corpora ------------------------------------------------------------------------------
def split(X: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, test): a seeded HELD_OUT share of the documents held out."""
    order = np.random.default_rng(SEED).permutation(X.shape[0])
    held = np.sort(order[:round(HELD_OUT * X.shape[0])])
    kept = np.sort(order[round(HELD_OUT * X.shape[0]):])
    return X[kept], X[held]


def corpora(config: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    try:
        X = sp.csr_matrix(lda_package().datasets.load_reuters()).astype(np.int64)
        out["reuters"] = {"X": X, "source": "lda.datasets.load_reuters()"}
    except ImportError as e:
        out["reuters"] = missing("the lda package (it ships the Reuters sample)", e)
    k = config["k"]
    data = make_corpus(config["synthetic"]["n_docs"], vocabulary=config["synthetic"]["vocabulary"],
                       topics=k, doc_length=100, seed=SEED)
    out["synthetic"] = {"X": data.docs, "truth": data, "source": (
        f"models.synthetic_topics.make_corpus({config['synthetic']['n_docs']}, "
        f"vocabulary={config['synthetic']['vocabulary']}, topics={k}, doc_length=100, "
        f"seed={SEED})")}
    for c in out.values():
        if "X" in c:
            c["train"], c["test"] = split(c["X"])
    return out


def describe(c: dict) -> dict:
    X, train, test = c["X"], c["train"], c["test"]
    lengths = np.asarray(test.sum(axis=1)).ravel()
    return {"source": c["source"], "documents": X.shape[0], "vocabulary": X.shape[1],
            "tokens": int(X.sum()), "train_docs": train.shape[0], "test_docs": test.shape[0],
            "train_tokens": int(train.sum()),
            "held_tokens": int((lengths - lengths // 2)[lengths >= 2].sum())}


# -- the systems --------------------------------------------------------------------------
def normalized(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / rows.sum(axis=1, keepdims=True)


def psframework_fit(k: int, iterations: int, shards: int, sampler: str = "mh") -> Fit:
    from models.lda import LocalLDA

    def fit(train: sp.csr_matrix) -> dict:
        model = LocalLDA(k=k, alpha=ALPHA, beta=BETA, iterations=iterations, sampler=sampler,
                         mh_steps=2, num_workers=2, num_shards=shards, seed=SEED,
                         evaluate_every=iterations, show_progress=False)
        began = time.perf_counter()
        model.fit(train)
        seconds = time.perf_counter() - began
        history = model.history_
        rest = history[1:] or history
        out = {"seconds": seconds, "topics": model.topic_word_, "alpha": ALPHA,
               "sampling_s": round(sum(h["seconds"] for h in history), 3),
               "iteration_tokens_per_s": round(statistics.median(
                   h["tokens_per_s"] for h in rest)),
               "training_perplexity": round(history[-1]["perplexity"], 2),
               "log_likelihood": round(history[-1]["log_likelihood"], 1)}
        if hasattr(model, "close"):
            model.close()
        return out
    return fit


def spark_frame(session, X: sp.csr_matrix):
    from pyspark.ml.linalg import Vectors
    rows = [(d, Vectors.sparse(X.shape[1], X.indices[a:b].tolist(),
                               X.data[a:b].astype(float).tolist()))
            for d, (a, b) in enumerate(zip(X.indptr[:-1].tolist(), X.indptr[1:].tolist()))]
    df = session.createDataFrame(rows, ["id", "features"]).repartition(2).cache()
    df.count()
    return df


def mllib_estimator(optimizer: str, k: int, iterations: int):
    from pyspark.ml.clustering import LDA
    if optimizer == "em":
        return LDA(k=k, maxIter=iterations, optimizer="em", docConcentration=[1 + ALPHA],
                   topicConcentration=1 + BETA, checkpointInterval=10, seed=SEED)
    return LDA(k=k, maxIter=iterations, optimizer="online", docConcentration=[ALPHA],
               topicConcentration=BETA, optimizeDocConcentration=False, subsamplingRate=1.0,
               seed=SEED)


def mllib_fit(optimizer: str, k: int, iterations: int, frames: dict) -> Fit:
    def fit(train: sp.csr_matrix) -> dict:
        df = frames[id(train)]
        began = time.perf_counter()
        model = mllib_estimator(optimizer, k, iterations).fit(df)
        seconds = time.perf_counter() - began
        counts = model.topicsMatrix().toArray().T  # k × V
        concentration = model.estimatedDocConcentration().toArray()
        if optimizer == "em":  # MAP: (N_wk + η - 1) / (N_k + V(η - 1)), θ's α - 1 likewise
            topics, alpha = normalized(counts + BETA), concentration - 1
        else:
            topics, alpha = normalized(counts), concentration
        return {"seconds": seconds, "topics": topics, "alpha": alpha,
                "doc_concentration": float(concentration[0]),
                "topics_matrix_sum": round(float(counts.sum()), 1)}
    return fit


def gensim_fit(k: int, iterations: int) -> Fit:
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaModel

    def fit(train: sp.csr_matrix) -> dict:
        corpus = Sparse2Corpus(train, documents_columns=False)
        words = {i: str(i) for i in range(train.shape[1])}
        began = time.perf_counter()
        model = LdaModel(corpus, num_topics=k, id2word=words, passes=iterations,
                         iterations=50, alpha=ALPHA, eta=BETA, chunksize=2000, update_every=1,
                         random_state=SEED)
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "topics": normalized(model.get_topics()),
                "alpha": np.asarray(model.alpha, np.float64)}
    return fit


def lda_package_fit(k: int, iterations: int) -> Fit:
    import logging
    lda = lda_package()
    logging.getLogger("lda").setLevel(logging.ERROR)

    def fit(train: sp.csr_matrix) -> dict:
        began = time.perf_counter()
        model = lda.LDA(k, n_iter=iterations, alpha=ALPHA, eta=BETA, random_state=SEED)
        model.fit(train)
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "topics": normalized(model.topic_word_), "alpha": ALPHA}
    return fit


# -- scoring and summaries ----------------------------------------------------------------
def score(run: dict, corpus: dict) -> dict:
    """The held-out perplexity of a run's topics, and their distance to the truth."""
    got = completion_perplexity(corpus["test"], run["topics"], run["alpha"], seed=SEED)
    out = {"held_out_perplexity": got["perplexity"]}
    truth = corpus.get("truth")
    if truth is not None:
        _, hellinger = match_topics(run["topics"], truth.topic_word)
        out.update(topic_hellinger_mean=float(hellinger.mean()),
                   topic_hellinger_max=float(hellinger.max()))
    return out


def summary(runs: list[dict], train_tokens: int, passes: int, settings: dict) -> dict:
    seconds = [r["seconds"] for r in runs]
    perplexities = [r["held_out_perplexity"] for r in runs]
    fit_s = statistics.median(seconds)
    alpha = np.atleast_1d(runs[0]["alpha"])
    out = {**settings, "fit_s": round(fit_s, 3), "fit_s_reps": [round(s, 3) for s in seconds],
           "passes": passes, "tokens_per_s": round(train_tokens * passes / fit_s),
           "held_out_perplexity": round(statistics.median(perplexities), 2),
           "held_out_perplexity_reps": [round(p, 2) for p in perplexities],
           "alpha_scored": round(float(alpha[0]), 6) if np.ptp(alpha) == 0
           else [round(float(a), 6) for a in alpha]}
    for key in ("topic_hellinger_mean", "topic_hellinger_max"):
        if key in runs[0]:
            out[key] = round(statistics.median(r[key] for r in runs), 4)
    for key, value in runs[0].items():  # the system's own extras (first rep)
        if key not in ("seconds", "topics", "alpha", "held_out_perplexity") and key not in out:
            out[key] = value
    return out


def ratios_and_target(systems: dict) -> tuple[dict, dict]:
    em = systems.get("mllib_em", {})
    ratios: dict = {}
    if "fit_s" in em:
        for name, s in systems.items():
            if name != "mllib_em" and "fit_s" in s:
                ratios[f"{name}_vs_mllib_em_perplexity"] = round(
                    s["held_out_perplexity"] / em["held_out_perplexity"], 4)
                ratios[f"{name}_vs_mllib_em_time"] = round(s["fit_s"] / em["fit_s"], 4)
    ours = systems.get("psframework", {})
    if "fit_s" in em and "fit_s" in ours:
        p_met = ours["held_out_perplexity"] <= em["held_out_perplexity"]
        t_met = ours["fit_s"] <= em["fit_s"] / 5
        target = {"perplexity_met": p_met, "time_met": t_met, "met": p_met and t_met,
                  "psframework_perplexity": ours["held_out_perplexity"],
                  "mllib_em_perplexity": em["held_out_perplexity"],
                  "psframework_fit_s": ours["fit_s"], "mllib_em_fit_s": em["fit_s"],
                  "time_limit_s": round(em["fit_s"] / 5, 3)}
    else:
        target = {"met": None, "why": "needs both psframework and mllib_em"}
    return ratios, target


# -- the comparison -----------------------------------------------------------------------
def compare(args, config: dict) -> dict:
    k, iterations = config["k"], config["iterations"]
    reps = args.reps or 1
    data = corpora(config)
    ready = {name: c for name, c in data.items() if "X" in c}
    out: dict = {"corpora": {}}
    for name, c in data.items():
        out["corpora"][name] = {"data": describe(c)} if "X" in c else c
        if "truth" in c:
            out["corpora"][name]["truth"] = {"alpha": ALPHA, "held_out_perplexity": round(
                completion_perplexity(c["test"], c["truth"].topic_word, ALPHA, seed=SEED)
                ["perplexity"], 2)}
        if "X" in c:
            log(f"{name}: {describe(c)}")

    fits: dict[str, Fit] = {}
    skipped: dict[str, dict] = {}
    settings: dict[str, dict] = {
        "psframework": {"sampler": "mh", "mh_steps": 2, "num_workers": 2,
                        "num_shards": args.shards},
        "psframework_exact": {"sampler": "exact", "num_workers": 2, "num_shards": args.shards},
        "mllib_em": {"docConcentration": 1 + ALPHA, "topicConcentration": 1 + BETA,
                     "checkpointInterval": 10},
        "mllib_online": {"docConcentration": ALPHA, "topicConcentration": BETA,
                         "subsamplingRate": 1.0, "optimizeDocConcentration": False},
        "gensim": {"iterations": 50, "chunksize": 2000},
        "lda_package": {}}
    fits["psframework"] = psframework_fit(k, iterations, args.shards)
    fits["psframework_exact"] = psframework_fit(k, iterations, args.shards, "exact")
    log("psframework: a 2-iteration warm-up fit (compiles the kernels)")
    for sampler in ("mh", "exact"):
        psframework_fit(k, 2, args.shards, sampler)(ready[next(iter(ready))]["train"][:50])
    session, frames, checkpoints = None, {}, None
    try:
        began = time.perf_counter()
        session = spark_session("lda-bench")
        checkpoints = tempfile.TemporaryDirectory(prefix="lda-bench-")
        session.sparkContext.setCheckpointDir(checkpoints.name)
        started = time.perf_counter()
        for c in ready.values():
            frames[id(c["train"])] = spark_frame(session, c["train"])
        framed = time.perf_counter()
        first = frames[id(ready[next(iter(ready))]["train"])]
        for optimizer in ("em", "online"):  # the JVM's JIT warm-up
            mllib_estimator(optimizer, k, 2).fit(first)
        warm = time.perf_counter()
        out["spark_start_s"] = {"session": round(started - began, 1),
                                "frames": round(framed - started, 1),
                                "warm_up": round(warm - framed, 1)}
        log(f"spark: started and warmed up {out['spark_start_s']}")
        fits["mllib_em"] = mllib_fit("em", k, iterations, frames)
        fits["mllib_online"] = mllib_fit("online", k, iterations, frames)
    except Exception as e:  # report, and run the others
        log(f"spark failed: {type(e).__name__}: {e}")
        for name in ("mllib_em", "mllib_online"):
            skipped[name] = {"error": f"{type(e).__name__}: {e}"}
    try:
        fits["gensim"] = gensim_fit(k, iterations)
    except ImportError as e:
        skipped["gensim"] = missing("gensim", e)
    try:
        fits["lda_package"] = lda_package_fit(k, iterations)
    except ImportError as e:
        skipped["lda_package"] = missing("the lda package", e)

    try:
        for name, c in ready.items():
            runs: dict[str, list[dict]] = {system: [] for system in fits}
            failed: dict[str, dict] = {}
            for rep in range(reps):  # systems take turns
                for system, fit in fits.items():
                    if system in failed:
                        continue
                    log(f"{name}: {system}, rep {rep + 1}/{reps}")
                    try:
                        run = fit(c["train"])
                    except Exception as e:  # a baseline's failure is reported, ours raises
                        if system.startswith("psframework"):
                            raise
                        failed[system] = {"error": f"{type(e).__name__}: {e}"}
                        log(f"  failed: {failed[system]['error']}")
                        continue
                    run.update(score(run, c))
                    runs[system].append(run)
                    log(f"  fit {run['seconds']:.2f} s, held-out perplexity "
                        f"{run['held_out_perplexity']:.1f}")
            train_tokens = int(c["train"].sum())
            systems = {system: summary(rs, train_tokens, iterations, settings[system])
                       for system, rs in runs.items() if system not in failed}
            systems.update(skipped)
            systems.update(failed)
            ratios, target = ratios_and_target(systems)
            out["corpora"][name].update(systems=systems, ratios=ratios, target=target)
            log(f"{name}: target {target}")
    finally:
        if session is not None:
            session.stop()
        if checkpoints is not None:
            checkpoints.cleanup()
    return out


# -- scale --------------------------------------------------------------------------------
def shard_stats(client, model: str) -> dict:
    """Each shard's `stats` op: its partitions of `model` (bytes) and its RSS."""
    out = {}
    for server in client.status()["servers"]:
        stats = client.run(client.aio.request(server["address"], "stats",
                                              shard=server["name"])).args
        out[server["name"]] = {
            "partition_mb": round(stats["models"].get(model, {}).get("bytes", 0) / MB, 1),
            "rss_mb": round(stats["rss"] / MB) if stats.get("rss") else None}
    return out


def scale(args) -> dict:
    from psframework import Client, LocalCluster
    from models.lda import LocalLDA
    setting = SCALE[args.quick]
    began = time.perf_counter()
    docs = make_corpus(setting["n_docs"], vocabulary=setting["vocabulary"],
                       topics=setting["topics"], doc_length=100, seed=SEED).docs
    made = time.perf_counter() - began
    tokens = int(docs.sum())
    log(f"scale: {docs.shape[0]} documents, {docs.shape[1]} words, {tokens:,} tokens "
        f"(made in {made:.1f} s)")
    out: dict = {"data": {"documents": docs.shape[0], "vocabulary": docs.shape[1],
                          "tokens": tokens, "true_topics": setting["topics"],
                          "make_corpus_s": round(made, 1)},
                 "iterations": setting["iterations"], "shards": args.shards, "k": {}}
    with LocalCluster(shards=args.shards) as cluster, Client(cluster.address) as client:
        for k in SCALE_KS:
            name = f"lda-scale-{k}"
            log(f"scale: k = {k}")
            model = LocalLDA(k=k, alpha=ALPHA, beta=BETA, iterations=setting["iterations"],
                             sampler="mh", evaluate_every=0, num_workers=2, seed=SEED,
                             master=cluster.address, name=name, show_progress=False)
            try:
                with Peaks(tree_rss, 0.1) as peaks:
                    t = time.perf_counter()
                    model.fit(docs)
                    fit_s = time.perf_counter() - t
                shards = shard_stats(client, name)
            finally:
                client.destroy(name)
            history = model.history_
            rest = history[1:] or history
            per_iteration = statistics.median(h["seconds"] for h in rest)
            out["k"][str(k)] = {
                "fit_s": round(fit_s, 2),
                "iteration_s": [round(h["seconds"], 3) for h in history],
                "s_per_iteration": round(per_iteration, 3),
                "tokens_per_s": round(statistics.median(h["tokens_per_s"] for h in rest)),
                "word_topic_mb": round(docs.shape[1] * k * 4 / MB, 1),
                "shard_partition_mb": {s: v["partition_mb"] for s, v in shards.items()},
                "shard_rss_mb": {s: v["rss_mb"] for s, v in shards.items()},
                "peak_rss_mb": peaks.mb()}
            log(f"  {per_iteration:.2f} s per iteration, "
                f"{out['k'][str(k)]['tokens_per_s']:,} tokens/s, shards {shards}")
            if hasattr(model, "close"):
                model.close()
            del model
    small, large = (out["k"][str(k)]["s_per_iteration"] for k in SCALE_KS)
    out["ratio_1000_vs_100"] = round(large / small, 3)
    out["target"] = "flat: ratio_1000_vs_100 near 1.0 (MH costs O(1) per token in k)"
    out["flat_within_1_5x"] = large / small <= 1.5
    return out


def main() -> int:
    global BETA
    scale_mode = "--scale" in sys.argv  # common.arguments knows only the shared flags
    if scale_mode:
        sys.argv.remove("--scale")
    if "--beta" in sys.argv:
        at = sys.argv.index("--beta")
        BETA = float(sys.argv[at + 1])
        del sys.argv[at:at + 2]
    args = arguments(__doc__, "k = 10, 20 iterations, a small synthetic corpus (with "
                     "--scale: 1M tokens), for CI", "runs of every system (default 1)")
    config = QUICK if args.quick else FULL
    out: dict = {"benchmark": "lda_scale" if scale_mode else "lda", "machine": machine(),
                 "config": {"quick": args.quick, "shards": args.shards, "seed": SEED,
                            "alpha": ALPHA, "beta": BETA}}
    if scale_mode:
        out["config"].update(ks=list(SCALE_KS), **SCALE[args.quick])
        out["scale"] = scale(args)
    else:
        out["config"].update(k=config["k"], iterations=config["iterations"],
                             held_out=HELD_OUT, reps=args.reps or 1, synthetic=config["synthetic"],
                             spark_master="local[2]")
        out.update(compare(args, config))
    out["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
