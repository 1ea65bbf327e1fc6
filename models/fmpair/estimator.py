"""`FMPair`: FMPair as a pyspark.ml Estimator; Spark executors train it on the parameter
server (the Glint-FMPair way), and `FMPairModel` recommends without one.

    from models.fmpair import FMPair
    model = FMPair(numDims=64, maxIter=10).fit(interactions)      # integrated mode
    model.recommendForAllUsers(10).show()

`fit` computes the feature metadata on Spark (counts, popularity, item features, sampling
attribute, training items per user), starts a `SparkParameterServer` (master on the
driver, `numParameterServers` shards on executors) or uses the one at
`parameterServerHost`, repartitions the interactions by user and runs one Spark job per
epoch in which every partition trains its users' positives with the FMPair worker loop
(`models.fmpair.worker.Trainer`) through its executor's client. The driver logs each
epoch's loss and pairs/s. The parameters are then pulled into the model, so recommending,
scoring and saving need no parameter server; in integrated mode it stops after `fit`.
"""

from __future__ import annotations

import logging
import numbers
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import scipy.sparse as sp
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import (
    DefaultParamsReadable, DefaultParamsReader, DefaultParamsWritable, DefaultParamsWriter,
    MLReadable, MLReader, MLWritable, MLWriter,
)
from pyspark.sql import DataFrame, functions as F, types as T

from psframework import ConfigError
from psframework.spark import SparkParameterServer, executor_client
from models.fmpair.features import FeatureSpace
from models.fmpair.local import LocalFMPair
from models.fmpair.losses import LOSSES
from models.fmpair.plugin import OPTIMIZERS
from models.fmpair.sampling import SAMPLERS, NegativeSampler
from models.fmpair.worker import Trainer

__all__ = ["FMPair", "FMPairModel"]

log = logging.getLogger("models.fmpair")

INTEGER_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def _param(name: str, doc: str, converter) -> Param:
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class _FMPairParams(Params):
    """The params of FMPair and FMPairModel (defaults as in the Glint fork)."""

    userCol = _param("userCol", "column of user ids (integers >= 0)", TypeConverters.toString)
    itemCol = _param("itemCol", "column of item ids (integers >= 0)", TypeConverters.toString)
    userctxfeaturesCol = _param("userctxfeaturesCol", "optional column of user and context "
                                "features per interaction (Vector); default: one-hot user ids",
                                TypeConverters.toString)
    itemfeaturesCol = _param("itemfeaturesCol", "optional column of the item's features "
                             "(Vector); default: one-hot item ids", TypeConverters.toString)
    samplingCol = _param("samplingCol", "optional integer item attribute (e.g. artist): "
                         "negatives sharing it with a user's positives are rejected",
                         TypeConverters.toString)
    filterItemsCol = _param("filterItemsCol", "optional array<int> column of items never to "
                            "recommend to the row's user", TypeConverters.toString)
    predictionCol = _param("predictionCol", "score column added by transform",
                           TypeConverters.toString)
    sampler = _param("sampler", f"negative sampler, one of {SAMPLERS}", TypeConverters.toString)
    loss = _param("loss", f"loss, one of {LOSSES}", TypeConverters.toString)
    rho = _param("rho", "exp sampler: P(rank r) ∝ exp(-r / (rho · items))", TypeConverters.toFloat)
    maxIter = _param("maxIter", "epochs over the interactions", TypeConverters.toInt)
    stepSize = _param("stepSize", "step size (AdaGrad or AdaBatch scaled)", TypeConverters.toFloat)
    seed = _param("seed", "random seed", TypeConverters.toInt)
    batchSize = _param("batchSize", "positives per mini-batch", TypeConverters.toInt)
    numDims = _param("numDims", "latent dimensions", TypeConverters.toInt)
    linearReg = _param("linearReg", "L2 regularization of the linear weights",
                       TypeConverters.toFloat)
    factorsReg = _param("factorsReg", "L2 regularization of the factors", TypeConverters.toFloat)
    numNegatives = _param("numNegatives", "candidate negatives per positive (warp, crossbatch)",
                          TypeConverters.toInt)
    optimizer = _param("optimizer", f"per-feature adaptive steps, one of {OPTIMIZERS}",
                       TypeConverters.toString)
    numParameterServers = _param("numParameterServers", "shards started on executors "
                                 "(integrated mode)", TypeConverters.toInt)
    parameterServerHost = _param("parameterServerHost", "HOST:PORT of a running psframework "
                                 "master (separate mode); unset: integrated mode",
                                 TypeConverters.toString)
    numConcurrentBatches = _param("numConcurrentBatches", "mini-batches in flight per "
                                  "partition", TypeConverters.toInt)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(userCol="user", itemCol="item", predictionCol="prediction",
                         sampler="uniform", loss="bpr", rho=1.0, maxIter=10, stepSize=0.1,
                         seed=1, batchSize=256, numDims=150, linearReg=0.01, factorsReg=0.001,
                         numNegatives=10, optimizer="adagrad", numParameterServers=3,
                         numConcurrentBatches=2)

    def _value(self, name: str) -> Any:
        """The param's value, or None when an optional one is not set."""
        param = self.getParam(name)
        return self.getOrDefault(param) if self.isDefined(param) else None

    def _check(self) -> None:
        """Every param, before anything starts; errors name the param."""
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"FMPair param {name} must be {what}, got "
                                  f"{self._value(name)!r}")
        for name in ("maxIter", "batchSize", "numDims", "numNegatives", "numParameterServers",
                     "numConcurrentBatches"):
            need(self._value(name) >= 1, name, "a positive integer")
        need(self._value("sampler") in SAMPLERS, "sampler", f"one of {SAMPLERS}")
        need(self._value("loss") in LOSSES, "loss", f"one of {LOSSES}")
        need(self._value("optimizer") in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
        for name in ("rho", "stepSize"):
            need(self._value(name) > 0, name, "> 0")
        for name in ("linearReg", "factorsReg"):
            need(self._value(name) >= 0, name, ">= 0")
        host = self._value("parameterServerHost")
        port = (host or "").rpartition(":")[2]
        need(host is None or (port.isdigit() and 0 < int(port) < 65536), "parameterServerHost",
             "HOST:PORT of a psframework master")

    def _check_columns(self, schema: T.StructType, *, training: bool) -> None:
        """Columns exist with the right types. Training needs userCol and itemCol and the
        optional columns set; scoring only the user column and what it finds."""
        kinds = {"userCol": INTEGER_TYPES, "itemCol": INTEGER_TYPES,
                 "userctxfeaturesCol": (VectorUDT,), "itemfeaturesCol": (VectorUDT,),
                 "samplingCol": INTEGER_TYPES, "filterItemsCol": (T.ArrayType,)}
        fields = {f.name: f.dataType for f in schema.fields}
        for name, types in kinds.items():
            column = self._value(name)
            if column is None or (not training and name != "userCol" and column not in fields):
                continue
            if column not in fields:
                raise ConfigError(f"FMPair param {name}: column {column!r} is not in the "
                                  f"DataFrame (it has {sorted(fields)})")
            kind = fields[column]
            ok = isinstance(kind, types) and (
                not isinstance(kind, T.ArrayType) or isinstance(kind.elementType, INTEGER_TYPES))
            if not ok:
                want = "array<integer>" if name == "filterItemsCol" else (
                    "Vector" if types == (VectorUDT,) else "integer")
                raise ConfigError(f"FMPair param {name}: column {column!r} must hold "
                                  f"{want}, not {kind.simpleString()}")


class FMPair(Estimator, _FMPairParams, DefaultParamsWritable, DefaultParamsReadable):
    """Pairwise factorization machine (the LightFM model) trained on the parameter server
    from Spark executors. Params: see `explainParams()`; docs/fmpair-spark.md."""

    @keyword_only
    def __init__(self, *, userCol: str = "user", itemCol: str = "item",
                 userctxfeaturesCol: str | None = None, itemfeaturesCol: str | None = None,
                 samplingCol: str | None = None, filterItemsCol: str | None = None,
                 predictionCol: str = "prediction", sampler: str = "uniform", loss: str = "bpr",
                 rho: float = 1.0, maxIter: int = 10, stepSize: float = 0.1, seed: int = 1,
                 batchSize: int = 256, numDims: int = 150, linearReg: float = 0.01,
                 factorsReg: float = 0.001, numNegatives: int = 10, optimizer: str = "adagrad",
                 numParameterServers: int = 3, parameterServerHost: str | None = None,
                 numConcurrentBatches: int = 2) -> None:
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, userCol: str = "user", itemCol: str = "item",
                  userctxfeaturesCol: str | None = None, itemfeaturesCol: str | None = None,
                  samplingCol: str | None = None, filterItemsCol: str | None = None,
                  predictionCol: str = "prediction", sampler: str = "uniform",
                  loss: str = "bpr", rho: float = 1.0, maxIter: int = 10, stepSize: float = 0.1,
                  seed: int = 1, batchSize: int = 256, numDims: int = 150,
                  linearReg: float = 0.01, factorsReg: float = 0.001, numNegatives: int = 10,
                  optimizer: str = "adagrad", numParameterServers: int = 3,
                  parameterServerHost: str | None = None,
                  numConcurrentBatches: int = 2) -> "FMPair":
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)

    # -- training ------------------------------------------------------------------------
    def _fit(self, dataset: DataFrame) -> "FMPairModel":
        self._check()
        self._check_columns(dataset.schema, training=True)
        meta = _Metadata.compute(self, dataset)
        host = self._value("parameterServerHost")
        spark = dataset.sparkSession
        ps = SparkParameterServer(spark, None if host else self._value("numParameterServers"),
                                  host=host)
        with ps:
            name = f"fmpair-{uuid.uuid4().hex[:12]}"
            client = ps.client()
            client.create_model(name, "fmpair", {
                "n_features": meta.space.n_features, "dims": self._value("numDims"),
                "seed": self._value("seed"), "step_size": self._value("stepSize"),
                "linear_reg": self._value("linearReg"), "factors_reg": self._value("factorsReg"),
                "optimizer": self._value("optimizer")})
            try:
                history = self._train(spark, dataset, meta, ps.master, name)
                every = np.arange(meta.space.n_features)
                state = LocalFMPair(dims=self._value("numDims"))
                state.factors_ = client.pull_rows(name, "factors", every)
                state.linear_ = client.pull_rows(name, "linear", every)
            except BaseException:
                client.destroy(name)
                raise
            state.space_, state.train_ = meta.space, meta.train
            state.history_ = history
            keep = not ps.integrated  # a separate cluster keeps it until destroy()
            model = FMPairModel(state, meta.user_context, meta.exclude,
                                ps.master if keep else None, name if keep else None)
        return self._copyValues(model)

    def _train(self, spark, dataset: DataFrame, meta: "_Metadata", master: str,
               name: str) -> list[dict]:
        cols = [self._value("userCol"), self._value("itemCol")]
        if self._value("userctxfeaturesCol"):
            cols.append(self._value("userctxfeaturesCol"))
        sc = spark.sparkContext
        parts = max(sc.defaultParallelism, 1)
        data = dataset.select(*cols).repartition(parts, cols[0]).persist()
        shared = sc.broadcast({"item": meta.space.item, "attribute": meta.attribute,
                               "popularity": meta.popularity, "n_users": meta.n_users,
                               "n_items": meta.n_items, "context_width": meta.context_width})
        job = {k: self._value(k) for k in ("sampler", "loss", "rho", "seed", "batchSize",
                                           "numNegatives", "numConcurrentBatches")}
        job.update(master=master, name=name)
        history = []
        try:
            for epoch in range(self._value("maxIter")):
                started = time.perf_counter()
                sc.setJobDescription(f"FMPair epoch {epoch + 1}/{self._value('maxIter')}")
                out = data.rdd.mapPartitionsWithIndex(
                    _EpochTask(job, shared, epoch)).collect()
                seconds = time.perf_counter() - started
                pairs = sum(p for p, _, _ in out)
                counted = sum(c for _, _, c in out)
                loss = sum(total for _, total, _ in out) / max(counted, 1)
                history.append({"epoch": epoch, "loss": loss, "pairs": pairs,
                                "seconds": seconds})
                log.info("FMPair epoch %d/%d: loss %.4f, %d pairs, %.0f pairs/s", epoch + 1,
                         self._value("maxIter"), loss, pairs, pairs / max(seconds, 1e-9))
        finally:
            sc.setJobDescription(None)
            data.unpersist()
            shared.unpersist()
        return history


class _EpochTask:
    """One epoch over one partition (a user's positives are all in one partition):
    build its share of the interactions, then run the worker loop through this
    executor's client. Returns [(positives, loss sum, pairs counted)]."""

    def __init__(self, job: dict, shared, epoch: int) -> None:
        self.job, self.shared, self.epoch = job, shared, epoch

    def __call__(self, index: int, rows: Iterable) -> Iterator[tuple[int, float, int]]:
        rows = list(rows)
        if not rows:
            return iter([(0, 0.0, 0)])
        job, meta = self.job, self.shared.value
        users = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        items = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        # one positive per (user, item), in the row-major order the context must follow
        _, first = np.unique(users * meta["n_items"] + items, return_index=True)
        users, items = users[first], items[first]
        train = sp.csr_matrix((np.ones(first.size, np.float32), (users, items)),
                              shape=(meta["n_users"], meta["n_items"]))
        user = sp.csr_matrix((meta["n_users"], 0), dtype=np.float32)
        if meta["context_width"]:
            context = _vectors_to_csr([rows[i][2] for i in first], meta["context_width"])
            space = FeatureSpace(user, meta["item"], context)
        else:
            space = FeatureSpace(sp.identity(meta["n_users"], np.float32, format="csr"),
                                 meta["item"])
        sampler = NegativeSampler(train, job["sampler"], job["rho"], True, meta["attribute"],
                                  popularity=meta["popularity"])
        seed = int(np.random.SeedSequence([job["seed"], index, self.epoch]).generate_state(1)[0])
        client = executor_client(job["master"])
        trainer = Trainer(client.aio, job["name"], space, train, sampler, loss=job["loss"],
                          batch_size=job["batchSize"], num_negatives=job["numNegatives"],
                          concurrent_batches=job["numConcurrentBatches"], seed=seed)
        totals = [0.0, 0]

        def on_batch(_size: int, total: float, counted: int) -> None:
            totals[0] += total
            totals[1] += counted
        stats = client.run(trainer.epoch(self.epoch, on_batch))
        return iter([(stats.pairs, totals[0], totals[1])])


class _Metadata:
    """What fit learns about the data on Spark before training."""

    @classmethod
    def compute(cls, params: _FMPairParams, df: DataFrame) -> "_Metadata":
        m = cls()
        u, i = params._value("userCol"), params._value("itemCol")
        row = df.agg(F.min(u), F.max(u), F.min(i), F.max(i), F.count(F.lit(1)),
                     F.count(u), F.count(i)).first()
        if row[4] == 0:
            raise ConfigError("FMPair.fit: the DataFrame has no rows to train on")
        if row[5] != row[4] or row[6] != row[4]:
            raise ConfigError(f"FMPair.fit: columns {u!r} and {i!r} must not hold nulls")
        if row[0] < 0 or row[2] < 0:
            raise ConfigError(f"FMPair.fit: ids in {u!r} and {i!r} must be >= 0 (found "
                              f"{min(row[0], row[2])}); index them first, e.g. StringIndexer")
        m.n_users, m.n_items = int(row[1]) + 1, int(row[3]) + 1
        pairs = np.array(df.select(u, i).distinct().collect(), np.int64).reshape(-1, 2)
        m.train = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                                shape=(m.n_users, m.n_items))
        m.popularity = np.asarray(m.train.sum(axis=0)).ravel()
        item = sp.identity(m.n_items, np.float32, format="csr")
        if params._value("itemfeaturesCol"):
            item = _per_id(df, i, params._value("itemfeaturesCol"), m.n_items)
        m.attribute = None
        if params._value("samplingCol"):
            got = df.groupBy(i).agg(F.first(params._value("samplingCol"), ignorenulls=True)
                                    ).collect()
            m.attribute = np.arange(m.n_items, dtype=np.int64) + 2**40  # unshared by default
            for item_id, value in got:
                if value is not None:
                    m.attribute[item_id] = value
        m.context_width = 0
        m.user_context = None
        if params._value("userctxfeaturesCol"):
            m.user_context = _per_id(df, u, params._value("userctxfeaturesCol"), m.n_users)
            m.context_width = m.user_context.shape[1]
            user = sp.csr_matrix((m.n_users, 0), dtype=np.float32)
            m.space = FeatureSpace(user, item, sp.csr_matrix((0, m.context_width), dtype=np.float32))
        else:
            m.space = FeatureSpace(sp.identity(m.n_users, np.float32, format="csr"), item)
        m.exclude = None
        if params._value("filterItemsCol"):
            m.exclude = _filter_items(df, u, params._value("filterItemsCol"), m.n_users, m.n_items)
        return m


def _vectors_to_csr(vectors: list, width: int) -> sp.csr_matrix:
    """Rows of pyspark.ml Vectors (sparse or dense) as a float32 CSR, `width` columns."""
    indptr, indices, data = [0], [], []
    for v in vectors:
        if v is None:
            raise ConfigError("a feature vector is null; every row needs one")
        if v.size != width:
            raise ConfigError(f"feature vectors must all have size {width}, found {v.size}")
        if hasattr(v, "indices"):  # SparseVector
            idx, val = v.indices, v.values
        else:  # DenseVector
            dense = v.toArray()
            idx = np.flatnonzero(dense)
            val = dense[idx]
        indices.append(np.asarray(idx, np.int64))
        data.append(np.asarray(val, np.float32))
        indptr.append(indptr[-1] + len(idx))
    m = sp.csr_matrix((np.concatenate(data) if data else np.zeros(0, np.float32),
                       np.concatenate(indices) if indices else np.zeros(0, np.int64),
                       np.array(indptr)), shape=(len(vectors), width), dtype=np.float32)
    m.sum_duplicates()
    return m


def _per_id(df: DataFrame, id_col: str, vector_col: str, n: int) -> sp.csr_matrix:
    """One vector per id (from one of its rows; ids without rows get an empty row)."""
    got = df.groupBy(id_col).agg(F.first(vector_col, ignorenulls=True).alias("v")).collect()
    width = next((v.size for _, v in got if v is not None), 0)
    vectors = _vectors_to_csr([v for _, v in got], width)
    ids = np.array([k for k, _ in got], np.int64)
    place = sp.csr_matrix((np.ones(ids.size, np.float32), (ids, np.arange(ids.size))),
                          shape=(n, ids.size))
    return (place @ vectors).tocsr()


def _filter_items(df: DataFrame, id_col: str, items_col: str, n_users: int,
                  n_items: int) -> sp.csr_matrix:
    pairs = df.select(id_col, F.explode(items_col).alias("_item")).where("_item IS NOT NULL")
    rows = np.array(pairs.distinct().collect(), np.int64).reshape(-1, 2)
    rows = rows[(rows[:, 1] >= 0) & (rows[:, 1] < n_items)]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows[:, 0], rows[:, 1])),
                         shape=(n_users, n_items))


class _Scorer:
    """The fitted parameters and what scoring needs besides them; what executors get."""

    def __init__(self, state: LocalFMPair, user_context: sp.csr_matrix | None,
                 exclude: sp.csr_matrix | None) -> None:
        self.state, self.user_context, self.exclude = state, user_context, exclude

    def context(self, users: np.ndarray, given: list | None) -> sp.csr_matrix | None:
        """Context rows for `users`: the vectors given, else those fit saw."""
        if self.user_context is None:
            return None
        if given is not None and all(v is not None for v in given):
            return _vectors_to_csr(given, self.user_context.shape[1])
        return self.user_context[users]


class FMPairModel(Model, _FMPairParams, MLWritable, MLReadable):
    """A fitted FMPair: its parameters live in the driver (and travel to executors by
    broadcast), so it recommends and scores without a parameter server."""

    def __init__(self, state: LocalFMPair | None = None, user_context=None, exclude=None,
                 ps_master: str | None = None, ps_model: str | None = None) -> None:
        super().__init__()
        self.state, self.user_context, self.exclude = state, user_context, exclude
        self.ps_master, self.ps_model = ps_master, ps_model

    @property
    def history(self) -> list[dict]:
        """Per epoch of fit: loss, pairs, seconds."""
        return getattr(self.state, "history_", [])

    def _scorer(self) -> _Scorer:
        return _Scorer(self.state, self.user_context, self.exclude)

    # -- scoring -------------------------------------------------------------------------
    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._check_columns(dataset.schema, training=False)
        u, i = self._value("userCol"), self._value("itemCol")
        if i not in dataset.columns:
            raise ConfigError(f"FMPairModel.transform needs the item column {i!r}")
        ctx = self._value("userctxfeaturesCol")
        ctx = ctx if ctx in dataset.columns else None
        names = dataset.columns
        at = (names.index(u), names.index(i), names.index(ctx) if ctx else None)
        model = dataset.sparkSession.sparkContext.broadcast(self._scorer())

        def score(rows: Iterable) -> Iterator[tuple]:
            rows = list(rows)
            if not rows:
                return
            me = model.value
            users = np.array([-1 if r[at[0]] is None else r[at[0]] for r in rows], np.int64)
            items = np.array([-1 if r[at[1]] is None else r[at[1]] for r in rows], np.int64)
            n_users, n_items = me.state.train_.shape
            known = (users >= 0) & (users < n_users) & (items >= 0) & (items < n_items)
            out = np.full(len(rows), np.nan)
            if known.any():
                k = np.flatnonzero(known)
                context = me.context(users[k], [rows[j][at[2]] for j in k] if at[2] is not None
                                     else None)
                out[k] = me.state.predict(users[k], items[k], context)
            for r, p in zip(rows, out):
                yield (*r, float(p))
        schema = T.StructType(dataset.schema.fields + [
            T.StructField(self._value("predictionCol"), T.DoubleType())])
        return dataset.sparkSession.createDataFrame(dataset.rdd.mapPartitions(score), schema)

    def recommendForAllUsers(self, numItems: int) -> DataFrame:
        """The top `numItems` for every user with training interactions, best first, as
        pyspark's ALS: (userCol, recommendations: array<struct<itemCol, rating>>)."""
        from pyspark.sql import SparkSession
        spark = SparkSession.active()
        users = np.flatnonzero(self.state.train_.getnnz(axis=1)).tolist()
        df = spark.createDataFrame([(int(x),) for x in users],
                                   T.StructType([T.StructField(self._value("userCol"),
                                                               T.LongType())]))
        return self.recommendForUserSubset(df, numItems)

    def recommendForUserSubset(self, dataset: DataFrame, numItems: int) -> DataFrame:
        """The top `numItems` for each distinct user of `dataset`, leaving out their
        training items, the items fit saw in filterItemsCol, and those in the dataset's
        filterItemsCol (if it has one). With a userctxfeaturesCol in the dataset, its
        first vector per user is the context; otherwise the one fit saw."""
        if (isinstance(numItems, bool) or not isinstance(numItems, numbers.Integral)
                or numItems < 1):  # numpy integers too
            raise ConfigError(f"numItems must be a positive integer, got {numItems!r}")
        self._check_columns(dataset.schema, training=False)
        u = self._value("userCol")
        aggs = []
        ctx, flt = self._value("userctxfeaturesCol"), self._value("filterItemsCol")
        ctx = ctx if ctx in dataset.columns else None
        flt = flt if flt in dataset.columns else None
        if ctx:
            aggs.append(F.first(ctx, ignorenulls=True).alias("ctx"))
        if flt:
            aggs.append(F.flatten(F.collect_list(flt)).alias("flt"))
        users = (dataset.groupBy(u).agg(*aggs) if aggs else dataset.select(u).distinct())
        model = dataset.sparkSession.sparkContext.broadcast(self._scorer())
        n = int(numItems)

        def recommend(rows: Iterable) -> Iterator[tuple]:
            rows = [r for r in rows if r[0] is not None]
            me = model.value
            n_users, n_items = me.state.train_.shape
            rows = [r for r in rows if 0 <= r[0] < n_users]  # unknown users: nothing to say
            if not rows:
                return
            ids = np.array([r[0] for r in rows], np.int64)
            exclude = me.exclude[ids] if me.exclude is not None else None
            if flt:
                extra = [[j for j in (r["flt"] or []) if j is not None and 0 <= j < n_items]
                         for r in rows]
                given = sp.csr_matrix((np.ones(sum(map(len, extra)), np.float32),
                                       np.concatenate([np.array(e, np.int64) for e in extra]),
                                       np.cumsum([0] + [len(e) for e in extra])),
                                      shape=(len(rows), n_items))
                exclude = given if exclude is None else exclude + given
            context = me.context(ids, [r["ctx"] for r in rows] if ctx else None)
            top, scores = me.state.recommend(ids, n, filter_seen=True, context=context,
                                             exclude=exclude)
            for user, t, s in zip(ids, top, scores):
                keep = np.isfinite(s)
                yield (int(user), [(int(a), float(b)) for a, b in zip(t[keep], s[keep])])
        schema = T.StructType([
            T.StructField(u, T.LongType()),
            T.StructField("recommendations", T.ArrayType(T.StructType([
                T.StructField(self._value("itemCol"), T.LongType()),
                T.StructField("rating", T.FloatType())])))])
        return dataset.sparkSession.createDataFrame(users.rdd.mapPartitions(recommend), schema)

    @property
    def userFactors(self) -> DataFrame:
        """(id, features): each user's representation Σ x_g v_g over its features (with
        userctxfeaturesCol: the context fit saw for the user)."""
        users = np.arange(self.state.train_.shape[0])
        reps = self.state.user_representations(users, self._scorer().context(users, None))
        return _factor_frame(reps)

    @property
    def itemFactors(self) -> DataFrame:
        """(id, features, bias): each item's Σ x_f v_f and Σ x_f w_f."""
        vectors, bias = self.state.item_representations()
        return _factor_frame(vectors, bias)

    def destroy(self) -> bool:
        """Free the model on the parameter server it was trained on (separate mode; in
        integrated mode it went with the servers when fit ended). True if one was freed."""
        if not self.ps_model:
            return False
        from pyspark.sql import SparkSession
        with SparkParameterServer(SparkSession.active(), host=self.ps_master) as ps:
            freed = ps.client().destroy(self.ps_model)
        self.ps_model = None
        return freed

    # -- persistence -----------------------------------------------------------------------
    def write(self) -> MLWriter:
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ModelReader(cls)


PARAMS = [p.name for p in vars(_FMPairParams).values() if isinstance(p, Param)]


def _add_accessors(cls: type, setters: bool) -> None:
    """getX() for every param (None for an optional one left unset) and, if `setters`,
    setX(value) returning self, as pyspark.ml classes have."""
    for name in PARAMS:
        cap = name[0].upper() + name[1:]

        def get(self, _name=name):
            return self._value(_name)

        def set_(self, value, _name=name):
            return self._set(**{_name: value})
        get.__name__, get.__doc__ = f"get{cap}", f"The value of {name}."
        set_.__name__, set_.__doc__ = f"set{cap}", f"Set {name}; returns self."
        setattr(cls, get.__name__, get)
        if setters:
            setattr(cls, set_.__name__, set_)


_add_accessors(_FMPairParams, setters=False)
_add_accessors(FMPair, setters=True)
for _name in ("userCol", "itemCol", "userctxfeaturesCol", "filterItemsCol", "predictionCol"):
    # what changes how a fitted model reads its input, as ALSModel allows
    setattr(FMPairModel, f"set{_name[0].upper()}{_name[1:]}", getattr(FMPair, f"set{_name[0].upper()}{_name[1:]}"))


def _factor_frame(vectors: np.ndarray, bias: np.ndarray | None = None) -> DataFrame:
    from pyspark.sql import SparkSession
    fields = [T.StructField("id", T.LongType()),
              T.StructField("features", T.ArrayType(T.FloatType()))]
    rows = [(i, [float(x) for x in v]) for i, v in enumerate(vectors)]
    if bias is not None:
        fields.append(T.StructField("bias", T.FloatType()))
        rows = [(*r, float(b)) for r, b in zip(rows, bias)]
    return SparkSession.active().createDataFrame(rows, T.StructType(fields))


def _data_dir(path: str) -> Path:
    """Model arrays are numpy files beside Spark's metadata, on a local or mounted path."""
    if "://" in path and not path.startswith("file://"):
        raise ConfigError(f"FMPairModel saves to local or mounted paths, not {path!r}")
    return Path(path.removeprefix("file://")) / "data"


class _ModelWriter(MLWriter):
    def __init__(self, instance: FMPairModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        m = self.instance
        DefaultParamsWriter.saveMetadata(m, path, self.sc, extraMetadata={
            "ps_master": m.ps_master, "ps_model": m.ps_model, "history": m.history})
        data = _data_dir(path)
        os.makedirs(data, exist_ok=True)
        m.state.save(data / "fmpair.npz")
        extra = {}
        for name in ("user_context", "exclude"):
            mat = getattr(m, name)
            if mat is not None:
                extra.update({f"{name}_{p}": getattr(mat, p) for p in ("data", "indices", "indptr")})
                extra[f"{name}_shape"] = np.array(mat.shape)
        with open(data / "extra.npz", "wb") as f:
            np.savez(f, **extra)


class _ModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> FMPairModel:
        meta = DefaultParamsReader.loadMetadata(path, self.sc)
        data = _data_dir(path)
        state = LocalFMPair.load(data / "fmpair.npz")
        state.history_ = meta.get("history", [])
        mats = {}
        with np.load(data / "extra.npz", allow_pickle=False) as f:
            for name in ("user_context", "exclude"):
                if f"{name}_shape" in f:
                    mats[name] = sp.csr_matrix((f[f"{name}_data"], f[f"{name}_indices"],
                                                f[f"{name}_indptr"]),
                                               shape=tuple(f[f"{name}_shape"]))
        model = self.cls(state, mats.get("user_context"), mats.get("exclude"),
                         meta.get("ps_master"), meta.get("ps_model"))
        model._resetUid(meta["uid"])  # as DefaultParamsReader does: params keep their owner
        DefaultParamsReader.getAndSetParams(model, meta)
        return model
