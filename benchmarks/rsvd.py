"""Randomized SVD on the parameter server versus scikit-learn's randomized_svd and MLlib's
RowMatrix.computeSVD, all on one seeded sparse matrix, scored against its exact top k.

    cd benchmarks && python rsvd.py [--quick] [--shards 2] [--reps R] > rsvd.json
    cd benchmarks && python rsvd.py --scale [--computesvd-limit 900] \
                                    [--driver-memory default,12g] > rsvd_scale.json

JSON on stdout, progress on stderr, scratch in /tmp/rsvd_bench. About 45 s (--quick
20 s; --scale with 1g and 12g drivers, 6 min) on 2 cores. The matrix, make_entries(m, n,
nnz, rank=2k, seed=0), is low rank plus noise on a random support:
`rank` rank-1 blocks, block l = DECAY**l · a·bᵀ (a, b standard normal) on h random rows
× w random columns (h·w ≈ SIGNAL·nnz/rank, h/w ≈ m/n), singular value ≈ DECAY**l ·
sqrt(h·w) (a planted spectrum decaying by 0.95); the other half of the entries standard
normal at uniform random positions (the noise bulk, ≈ sqrt(nnz/2m) + sqrt(nnz/2n)). A
position drawn twice keeps its first value (nnz a little under the target). Full:
20,000 × 10,000, 500k entries, k = 20; --quick: 2,000 × 1,000, 100k, k = 10.

systems: seconds = the fit alone (median over --reps; input already in its form),
max_rel_err_s = max over the top k of |s_i - ref_i| / ref_i, s = its values.
- reference: scipy.sparse.linalg.svds(A, k) (numpy's dense SVD when min(m, n) <= 2,000).
- sklearn: sklearn.utils.extmath.randomized_svd(A, k, n_oversamples=10, n_iter=2,
  random_state=0) on CSR (power_iteration_normalizer "auto": none at 2 iterations).
- spark_computesvd: MLlib RowMatrix.computeSVD(k, computeU=True) on local[2]; the
  RowMatrix built in the JVM (the entries' parquet as a DataFrame -> CoordinateMatrix ->
  toRowMatrix(): an RDD of SparseVector rows), persisted and counted before the clock,
  which also covers counting U's rows (U is lazy); an untimed computeSVD(2) warms the JIT.
  computeMode "auto" decomposes the n × n Gram matrix locally only when n < 100 or
  (k > n/2 and n <= 15,000); else (here, always) DistARPACK: ARPACK's Lanczos on the
  driver (tol 1e-10, up to max(300, 3k) restarts, ncv = 2k basis vectors of length n),
  each product AᵀA·v one treeAggregate job over the rows.
- psframework: models.rsvd.randomized_svd(A, k, oversample=10, power_iter=2, seed=0,
  num_shards=--shards) (its embedded cluster's start timed too).
- psframework_spark: models.rsvd.RandomizedSVD(k=k, oversample=10, powerIter=2, seed=0,
  numParameterServers=--shards).run(entries) on the same parquet DataFrame (row, col,
  value), its parameter server's start on the executors timed too.

scale (--scale, only this): 10^6 × 10^6 with 10^7 entries (the same generator: rank
100, blocks of ~224 × 224), k = 50, written with pyarrow, read with spark.read.parquet.
- psframework_spark: seconds, passes (.history), power_iteration_s (its Aᵀ·Q and A·Q_n
  passes, orthonormalization aside), ps_table_bytes = (m + n)(k + 10)·8, bytes pulled
  and pushed, peak RSS per kind of process (procs.tree_rss).
- spark_computesvd: computeSVD(50) (computeU=False) in a child process with its own JVM,
  once per --driver-memory ("default": Spark's, 1g), killed --computesvd-limit seconds
  after it starts (Spark start and loading included): status finished (seconds), failed
  (the Java exception's line) or still running at the limit, with the phase it was in,
  Spark jobs started, peak RSS (jvm: its JVM; python: the child). At n = 10^6 a Gram matrix (8 TB) is out
  of the question and DistARPACK's basis alone is 2k·n·8 bytes = 800 MB of driver heap;
  every Lanczos step is a pass over all of A.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import scipy.sparse as sp

from common import arguments, log, machine, spark_session
from procs import MB, Peaks, rss_bytes, tree_rss

SEED, OVERSAMPLE, POWER_ITER, DECAY, SIGNAL = 0, 10, 2, 0.95, 0.5
SIZES = {False: {"m": 20_000, "n": 10_000, "nnz": 500_000, "k": 20},
         True: {"m": 2_000, "n": 1_000, "nnz": 100_000, "k": 10}}
SCALE = {"m": 10**6, "n": 10**6, "nnz": 10**7, "k": 50}
SCRATCH = "/tmp/rsvd_bench"
SPARK = {"spark.local.dir": f"{SCRATCH}/spark-local"}


def option(name: str, default: str) -> str:
    """Take `--name VALUE` off sys.argv (common.arguments knows only the shared flags)."""
    if name not in sys.argv:
        return default
    at = sys.argv.index(name)
    value = sys.argv[at + 1]
    del sys.argv[at:at + 2]
    return value


# -- the matrix ---------------------------------------------------------------------------
def make_entries(m: int, n: int, nnz: int, rank: int, seed: int = SEED):
    """(rows, cols, values): int64, int64, float64, sorted by (row, col); see the docstring."""
    rng = np.random.default_rng(seed)
    h = max(1, round(np.sqrt(SIGNAL * nnz / rank * m / n)))
    w = max(1, round(SIGNAL * nnz / rank / h))
    rows, cols, values = [], [], []
    for l in range(rank):
        r, c = rng.choice(m, h, replace=False), rng.choice(n, w, replace=False)
        a, b = rng.standard_normal(h), rng.standard_normal(w)
        rows.append(np.repeat(r, w))
        cols.append(np.tile(c, h))
        values.append(DECAY**l * np.outer(a, b).ravel())
    noise = nnz - h * w * rank
    rows.append(rng.integers(0, m, noise))
    cols.append(rng.integers(0, n, noise))
    values.append(rng.standard_normal(noise))
    rows, cols, values = (np.concatenate(x) for x in (rows, cols, values))
    _, first = np.unique(rows * n + cols, return_index=True)  # sorted, duplicates dropped
    return rows[first], cols[first], values[first]


def write_parquet(entries, path: str) -> str:
    """The entries as parquet (row, col: int64, value: float64), 10^6 per row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(dict(zip(("row", "col", "value"), entries))), path,
                   row_group_size=10**6)
    return path


def reference(A: sp.csr_matrix, k: int) -> dict:
    """The exact top-k singular values: dense LAPACK when small, else ARPACK (svds)."""
    from scipy.sparse.linalg import svds
    began = time.perf_counter()
    if min(A.shape) <= 2000:
        s, method = np.linalg.svd(A.toarray(), compute_uv=False)[:k], "numpy.linalg.svd"
    else:
        v0 = np.random.default_rng(SEED).standard_normal(min(A.shape))
        s = svds(A, k, v0=v0, return_singular_vectors=False)
        method = "scipy.sparse.linalg.svds"
    return {"seconds": time.perf_counter() - began, "s": np.sort(s)[::-1], "method": method}


def max_rel_err(s, ref) -> float:
    """Over the values both have (MLlib drops values under rCond·s_1: `s` says how many)."""
    s = np.sort(np.asarray(s, np.float64))[::-1][:len(ref)]
    return float(np.max(np.abs(s - ref[:len(s)]) / ref[:len(s)]))


# -- the systems: each fit(...) -> {"seconds", "s", extras} ----------------------------------
def sklearn_fit(A: sp.csr_matrix, k: int) -> dict:
    from sklearn.utils.extmath import randomized_svd
    began = time.perf_counter()
    _, s, _ = randomized_svd(A, k, n_oversamples=OVERSAMPLE, n_iter=POWER_ITER, random_state=SEED)
    return {"seconds": time.perf_counter() - began, "s": s}


def row_matrix(session, path: str, m: int, n: int):
    """MLlib RowMatrix of the parquet entries, built in the JVM (CoordinateMatrix ->
    toRowMatrix: sparse row vectors), its rows persisted and counted."""
    from pyspark import StorageLevel
    from pyspark.mllib.common import callMLlibFunc
    from pyspark.mllib.linalg.distributed import CoordinateMatrix
    entries = session.read.parquet(path)
    java = callMLlibFunc("createCoordinateMatrix", entries, m, n)
    rows = CoordinateMatrix(java).toRowMatrix()
    jrows = rows._java_matrix_wrapper._java_model.rows()
    jrows.persist(session.sparkContext._getJavaStorageLevel(StorageLevel.MEMORY_AND_DISK))
    jrows.count()
    return rows


def computesvd_fit(rows, k: int, compute_u: bool = True) -> dict:
    began = time.perf_counter()
    svd = rows.computeSVD(k, computeU=compute_u)
    decomposed = time.perf_counter()
    if compute_u:
        svd._java_model.U().rows().count()  # U = A·V·Σ⁻¹ is lazy: materialize it
    return {"seconds": time.perf_counter() - began, "s": svd.s.toArray(),
            "computesvd_s": round(decomposed - began, 3)}


def psframework_fit(A: sp.csr_matrix, k: int, shards: int) -> dict:
    from models.rsvd import randomized_svd
    began = time.perf_counter()
    _, s, _ = randomized_svd(A, k, oversample=OVERSAMPLE, power_iter=POWER_ITER, seed=SEED,
                             num_shards=shards)
    return {"seconds": time.perf_counter() - began, "s": s}


def psframework_spark_fit(entries_df, k: int, shards: int) -> dict:
    from models.rsvd import RandomizedSVD
    began = time.perf_counter()
    svd = RandomizedSVD(k=k, oversample=OVERSAMPLE, powerIter=POWER_ITER, seed=SEED,
                        rowCol="row", colCol="col", valueCol="value",
                        numParameterServers=shards).run(entries_df)
    return {"seconds": time.perf_counter() - began, "s": np.asarray(svd.s),
            "history": list(svd.history)}


def scored(fit, reps: int, ref) -> dict:
    """Run `fit()` reps times: the median seconds, the first run's values and extras."""
    runs = [fit() for _ in range(reps)]
    out = {key: value for key, value in runs[0].items() if key not in ("s", "history")}
    return {**out, "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
            "seconds_reps": [round(r["seconds"], 3) for r in runs],
            "max_rel_err_s": float(f"{max_rel_err(runs[0]['s'], ref):.3g}"),
            "s": [round(float(x), 4) for x in np.sort(runs[0]["s"])[::-1]]}


def compare(args) -> dict:
    size = SIZES[args.quick]
    m, n, k, reps = size["m"], size["n"], size["k"], args.reps or 1
    began = time.perf_counter()
    entries = make_entries(m, n, size["nnz"], 2 * k)
    A = sp.csr_matrix((entries[2], (entries[0], entries[1])), shape=(m, n))
    path = write_parquet(entries, f"{SCRATCH}/matrix-{m}x{n}.parquet")
    matrix = {**size, "nnz": A.nnz, "rank": 2 * k, "decay": DECAY, "signal": SIGNAL,
              "seed": SEED, "make_s": round(time.perf_counter() - began, 2), "parquet": path}
    ref = reference(A, k)
    matrix["reference_s"] = [round(float(x), 4) for x in ref["s"]]
    log(f"matrix {m} x {n}, {A.nnz:,} nonzeros; reference ({ref['method']}) "
        f"{ref['seconds']:.2f} s: {np.round(ref['s'], 2)}")
    systems = {"reference": {"seconds": round(ref["seconds"], 3), "method": ref["method"]}}
    systems["sklearn"] = scored(lambda: sklearn_fit(A, k), reps, ref["s"])
    systems["psframework"] = scored(lambda: psframework_fit(A, k, args.shards), reps, ref["s"])
    session = spark_session("rsvd-bench", **SPARK)
    try:
        started = time.perf_counter()
        rows = row_matrix(session, path, m, n)
        computesvd_fit(rows, 2, compute_u=False)  # the JIT's warm-up
        log(f"spark: matrix cached and warmed up in {time.perf_counter() - started:.1f} s")
        systems["spark_computesvd"] = scored(lambda: computesvd_fit(rows, k), reps, ref["s"])
        df = session.read.parquet(path).cache()
        df.count()
        systems["psframework_spark"] = scored(lambda: psframework_spark_fit(df, k, args.shards),
                                              reps, ref["s"])
    finally:
        session.stop()
    for name, system in systems.items():
        log(f"{name}: {system.get('seconds')} s, max rel err {system.get('max_rel_err_s')}")
    return {"matrix": matrix, "systems": systems}


# -- scale --------------------------------------------------------------------------------
def psframework_scale(path: str, k: int, shards: int) -> dict:
    """RandomizedSVD at scale: seconds per pass and per power iteration (a pass Aᵀ·Q and
    a pass A·Q_n: history[1:1 + 2q] in pairs), PS table bytes, bytes moved, peak RSS."""
    session = spark_session("rsvd-scale", **SPARK)
    try:
        with Peaks(never_raising(tree_rss), 0.5) as peaks:
            run = psframework_spark_fit(session.read.parquet(path), k, shards)
    finally:
        session.stop()
    passes = [{"pass": h.get("pass", h.get("step")), "seconds": round(h["seconds"], 2),
               "bytes_pulled": h.get("bytes_pulled", 0), "bytes_pushed": h.get("bytes_pushed", 0)}
              for h in run["history"]]
    power = [a["seconds"] + b["seconds"] for a, b in
             zip(passes[1:1 + 2 * POWER_ITER:2], passes[2:2 + 2 * POWER_ITER:2])]
    return {"seconds": round(run["seconds"], 2), "passes": passes,
            "power_iteration_s": [round(x, 2) for x in power],
            "s_top5": [round(float(x), 3) for x in run["s"][:5]],
            "ps_table_bytes": (SCALE["m"] + SCALE["n"]) * (k + OVERSAMPLE) * 8,
            "bytes_pulled": sum(p["bytes_pulled"] for p in passes),
            "bytes_pushed": sum(p["bytes_pushed"] for p in passes), "peak_rss_mb": peaks.mb()}


def computesvd_child(spec: dict) -> None:
    """In the child process: one MLlib computeSVD at scale. Its state (phase, seconds,
    Spark jobs started) goes to a JSON file every 5 s, so the parent can say where a
    killed run was, and once more at the end with the status."""
    began = since = time.perf_counter()
    conf = {} if spec["memory"] == "default" else {"spark.driver.memory": spec["memory"]}
    session = spark_session("rsvd-computesvd", **SPARK, **conf)
    sc = session.sparkContext
    state = {"spark_start_s": round(time.perf_counter() - began, 1),
             "driver_memory": sc.getConf().get("spark.driver.memory", "default (1g)"),
             "jvm_max_heap_mb": round(sc._jvm.java.lang.Runtime.getRuntime().maxMemory() / MB)}

    def jobs() -> int:
        ids = sc.statusTracker().getJobIdsForGroup()
        return max(ids) + 1 if ids else 0

    def note(**changes) -> None:
        state.update(changes, elapsed_s=round(time.perf_counter() - began, 1))
        with open(spec["state"], "w") as f:
            json.dump(state, f)

    def report() -> None:
        while "status" not in state:
            note(jobs_started=jobs())
            time.sleep(5)

    note(phase="load and cache")
    threading.Thread(target=report, daemon=True).start()
    try:
        rows = row_matrix(session, spec["path"], spec["m"], spec["n"])
        note(phase="computeSVD", load_s=round(time.perf_counter() - since, 1),
             jobs_before_computesvd=jobs())
        since = time.perf_counter()
        run = computesvd_fit(rows, spec["k"], compute_u=False)
        result = {"status": "finished", "seconds": round(run["seconds"], 2),
                  "s_top5": [round(float(x), 3) for x in run["s"][:5]]}
    except Exception as e:  # the failure is the result
        result = {"status": "failed", "error": error_line(e),
                  "failed_after_s": round(time.perf_counter() - since, 1)}
    try:
        result["jobs_started"] = jobs()
    except Exception:  # the JVM is gone
        pass
    note(**result)
    os._exit(0)  # the JVM may be wedged: do not wait for a clean stop


def error_line(e: Exception) -> str:
    """The Java exception's line of a Py4JJavaError, else the first line."""
    lines = [line.strip(": ") for line in str(e).splitlines() if line.strip()]
    java = [line for line in lines if line.startswith(("java.", "org.apache", "scala."))]
    return f"{type(e).__name__}: {(java or lines or [''])[0]}"


def never_raising(measure):
    """A Peaks sampler that survives a process vanishing mid-read (its thread would die)."""
    def sample() -> dict[str, int]:
        try:
            return measure()
        except Exception:  # a process gone between two reads of /proc
            return {}
    return sample


def tree_of(root: int) -> dict[str, int]:
    """RSS of process `root` (the child: "python") and its descendants ("jvm" for java,
    else "python"); never raises, as a Peaks sampler must not (other processes come and go)."""
    parents, out = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
            parents[int(entry)] = (int(text[text.rindex(")") + 2:].split()[1]),
                                   text[text.index("(") + 1:text.rindex(")")])
        except (OSError, ValueError):
            pass
    todo = [root]
    while todo:
        pid = todo.pop()
        todo += [c for c, (parent, _) in parents.items() if parent == pid]
        kind = "jvm" if parents.get(pid, (0, ""))[1] == "java" else "python"
        out[kind] = out.get(kind, 0) + (rss_bytes(pid) or 0)
    return out


def computesvd_scale(path: str, memory: str, limit: float) -> dict:
    """computeSVD(50) in a child process with `memory`, killed after `limit` seconds."""
    name = f"{SCRATCH}/computesvd-{memory}"
    spec = {"path": path, "memory": memory, "k": SCALE["k"], "m": SCALE["m"], "n": SCALE["n"],
            "state": f"{name}.state.json"}
    if os.path.exists(spec["state"]):
        os.remove(spec["state"])
    began = time.perf_counter()
    with open(f"{name}.log", "w") as err:
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--computesvd-child",
                                  json.dumps(spec)], stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True)
    with Peaks(lambda: tree_of(child.pid), 0.5) as peaks:
        try:
            child.wait(limit)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child, its JVM and Python workers
            child.wait()
    out = {"driver_memory_setting": memory, "limit_s": limit, "log": f"{name}.log",
           "wall_s": round(time.perf_counter() - began, 1), "exit_code": child.returncode}
    if os.path.exists(spec["state"]):
        with open(spec["state"]) as f:
            out.update(json.load(f))
    if "status" not in out:
        out["status"] = "still running at the limit" if child.returncode == -signal.SIGKILL \
            else "failed (the child died without a result)"
    out["peak_rss_mb"] = peaks.mb()
    log(f"computeSVD with driver memory {memory}: {out['status']} {out.get('error', '')}")
    return out


def scale(args, limit: float, memories: list[str]) -> dict:
    k, began = SCALE["k"], time.perf_counter()
    entries = make_entries(SCALE["m"], SCALE["n"], SCALE["nnz"], 2 * k)
    path = write_parquet(entries, f"{SCRATCH}/scale.parquet")
    out: dict = {"matrix": {**SCALE, "nnz": len(entries[0]), "rank": 2 * k, "seed": SEED,
                            "make_s": round(time.perf_counter() - began, 1), "parquet": path}}
    del entries
    log(f"scale: {out['matrix']}")
    out["psframework_spark"] = psframework_scale(path, k, args.shards)
    out["spark_computesvd"] = [computesvd_scale(path, memory, limit) for memory in memories]
    return out


def main() -> int:
    if "--computesvd-child" in sys.argv:
        computesvd_child(json.loads(option("--computesvd-child", "{}")))
    scale_mode = "--scale" in sys.argv
    if scale_mode:
        sys.argv.remove("--scale")
        limit = float(option("--computesvd-limit", "900"))
        memories = option("--driver-memory", "default").split(",")
    args = arguments(__doc__, "2,000 × 1,000, 100k entries, k = 10, for CI",
                     "timed runs of every system (default 1)")
    os.makedirs(SCRATCH, exist_ok=True)
    out: dict = {"benchmark": "rsvd_scale" if scale_mode else "rsvd", "machine": machine(),
                 "config": {"quick": args.quick, "shards": args.shards, "reps": args.reps or 1,
                            "oversample": OVERSAMPLE, "power_iter": POWER_ITER,
                            "spark_master": "local[2]"}}
    if scale_mode:
        scaled = scale(args, limit, memories)
        out["matrix"], out["scale"] = scaled.pop("matrix"), scaled
    else:
        out.update(compare(args))
    out["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
