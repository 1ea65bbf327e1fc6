"""`MFSGD`: MF-SGD as a pyspark.ml Estimator with ALS's names; Spark executors train it
on the parameter server with Harp-DAAL's model rotation, and `MFSGDModel` predicts and
recommends without one.

    from models.mf_sgd import MFSGD
    model = MFSGD(rank=20, maxIter=10, regParam=0.02, stepSize=0.01).fit(ratings)
    model.transform(test)                        # prediction column, as ALS
    model.recommendForAllUsers(10)

`fit` checks the params and columns (ids may be StringIndexer's integral doubles), reads
μ, the id ranges and which ids are rated by aggregations, starts a `SparkParameterServer`
(or uses the one at `parameterServerHost`), pushes the initial item factors, and runs ONE
barrier-mode Spark job over the ratings repartitioned by user (`models.mf_sgd.spark_job`):
each task is a worker that owns its partition's users and their factors for the whole
fit and trains block (w + s) mod P of the items in sub-epoch s, the tasks meeting
between sub-epochs. The driver logs every epoch's train RMSE (and validation RMSE, with
`validationIndicatorCol`) and updates/s while the job runs. The job returns the users'
factors; the item side is pulled from the server.
"""

from __future__ import annotations

import numbers
import uuid
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import TypeConverters
from pyspark.ml.util import (
    DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLReader, MLWritable, MLWriter,
)
from pyspark.sql import DataFrame, functions as F, types as T

from psframework import ConfigError
from psframework.spark import (
    SparkParameterServer, Training, arrow, ml, pin_local_interpreter,
)
from models.frames import recommendations
from models.mf_sgd.local import LocalMFSGD
from models.mf_sgd.plugin import SCHEDULES
from models.mf_sgd.spark_job import USERS_SCHEMA, EpochLog, Train, id_column, metadata
from models.mf_sgd.worker import pull_item_side, push_item_side

__all__ = ["MFSGD", "MFSGDModel"]

NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
           T.DecimalType)
COLD_START = ("nan", "drop")


class _MFSGDParams(ml.ParamValues):
    userCol = ml.param("userCol", "column of user ids (integers >= 0, or integral doubles)",
                       TypeConverters.toString)
    itemCol = ml.param("itemCol", "column of item ids (integers >= 0, or integral doubles)",
                       TypeConverters.toString)
    ratingCol = ml.param("ratingCol", "column of ratings", TypeConverters.toString)
    validationIndicatorCol = ml.param(
        "validationIndicatorCol", "boolean column: rows where it is true are not trained on "
        "but scored after every epoch (validation RMSE)", TypeConverters.toString)
    predictionCol = ml.param("predictionCol", "prediction column", TypeConverters.toString)
    rank = ml.param("rank", "latent dimensions", TypeConverters.toInt)
    maxIter = ml.param("maxIter", "epochs", TypeConverters.toInt)
    regParam = ml.param("regParam", "L2 regularization of factors and biases",
                        TypeConverters.toFloat)
    stepSize = ml.param("stepSize", "SGD learning rate", TypeConverters.toFloat)
    decay = ml.param("decay", "the learning rate of epoch e is stepSize * decay^e",
                     TypeConverters.toFloat)
    biases = ml.param("biases", "model mu + b_u + b_i besides the factors",
                      TypeConverters.toBoolean)
    schedule = ml.param("schedule", f"one of {SCHEDULES}", TypeConverters.toString)
    seed = ml.param("seed", "random seed", TypeConverters.toInt)
    coldStartStrategy = ml.param("coldStartStrategy", "unknown ids in transform: 'nan' "
                                 "predicts NaN, 'drop' drops the row", TypeConverters.toString)
    batchSize = ml.param("batchSize", "async schedule: ratings per mini-batch",
                         TypeConverters.toInt)
    numConcurrentBatches = ml.param("numConcurrentBatches", "async schedule: mini-batches in "
                                    "flight per task", TypeConverters.toInt)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(userCol="user", itemCol="item", ratingCol="rating",
                         predictionCol="prediction", rank=10, maxIter=10, regParam=0.02,
                         stepSize=0.005, decay=1.0, biases=True, schedule="rotation", seed=0,
                         coldStartStrategy="nan", batchSize=1024, numConcurrentBatches=2,
                         numParameterServers=2, replicas=1)

    def _check(self) -> None:
        self._need_counts(("rank", "maxIter", "batchSize", "numConcurrentBatches",
                           "numParameterServers", "replicas"))
        self._need(self._value("stepSize") > 0, "stepSize", "> 0")
        self._need(self._value("regParam") >= 0, "regParam", ">= 0")
        self._need(0 < self._value("decay") <= 1, "decay", "in (0, 1]")
        self._need(self._value("schedule") in SCHEDULES, "schedule", f"one of {SCHEDULES}")
        self._need(self._value("coldStartStrategy") in COLD_START, "coldStartStrategy",
                   f"one of {COLD_START}")
        self._need_host()

    def _check_columns(self, schema: T.StructType, names: Iterable[str]) -> None:
        fields = {f.name: f.dataType for f in schema.fields}
        for name in names:
            column = self._value(name)
            if column not in fields:
                raise ConfigError(f"MFSGD param {name}: column {column!r} is not in the "
                                  f"DataFrame (it has {sorted(fields)})")
            boolean = name == "validationIndicatorCol"
            if not isinstance(fields[column], T.BooleanType if boolean else NUMERIC):
                raise ConfigError(f"MFSGD param {name}: column {column!r} must be "
                                  f"{'boolean' if boolean else 'numeric'}, not "
                                  f"{fields[column].simpleString()}")


class MFSGD(Estimator, _MFSGDParams, DefaultParamsWritable, DefaultParamsReadable):
    """Matrix factorization by SGD on the parameter server (docs/mf_sgd.md)."""

    @keyword_only
    def __init__(self, *, userCol: str = "user", itemCol: str = "item",
                 ratingCol: str = "rating", validationIndicatorCol: str | None = None,
                 predictionCol: str = "prediction", rank: int = 10,
                 maxIter: int = 10, regParam: float = 0.02, stepSize: float = 0.005,
                 decay: float = 1.0, biases: bool = True, schedule: str = "rotation",
                 seed: int = 0, coldStartStrategy: str = "nan", batchSize: int = 1024,
                 numConcurrentBatches: int = 2, numParameterServers: int = 2,
                 parameterServerHost: str | None = None, replicas: int = 1) -> None:
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, userCol: str = "user", itemCol: str = "item",
                  ratingCol: str = "rating", validationIndicatorCol: str | None = None,
                  predictionCol: str = "prediction", rank: int = 10,
                  maxIter: int = 10, regParam: float = 0.02, stepSize: float = 0.005,
                  decay: float = 1.0, biases: bool = True, schedule: str = "rotation",
                  seed: int = 0, coldStartStrategy: str = "nan", batchSize: int = 1024,
                  numConcurrentBatches: int = 2, numParameterServers: int = 2,
                  parameterServerHost: str | None = None, replicas: int = 1) -> "MFSGD":
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    def _fit(self, dataset: DataFrame) -> "MFSGDModel":
        self._check()
        valid = self._value("validationIndicatorCol")
        self._check_columns(dataset.schema, ("userCol", "itemCol", "ratingCol")
                            + (("validationIndicatorCol",) if valid else ()))
        sc = dataset.sparkSession.sparkContext
        pin_local_interpreter(sc)
        user, item, rating = (self._value(n) for n in ("userCol", "itemCol", "ratingCol"))
        meta = metadata(dataset, user, item, rating, valid, self._value("biases"))
        host = self._value("parameterServerHost")
        parts = max(sc.defaultParallelism, 1)
        epochs, rank = self._value("maxIter"), self._value("rank")
        state = LocalMFSGD(rank=rank, epochs=epochs, step_size=self._value("stepSize"),
                           decay=self._value("decay"), reg=self._value("regParam"),
                           biases=self._value("biases"), schedule=self._value("schedule"),
                           seed=self._value("seed"), show_progress=False)
        with SparkParameterServer(dataset.sparkSession, None if host else
                                  self._value("numParameterServers"), host=host) as ps:
            name = f"mf_sgd-{uuid.uuid4().hex[:12]}"
            client = ps.client()
            config = {"n_items": meta["n_items"], "rank": rank,
                      "schedule": self._value("schedule"), "epochs": epochs}
            rated = sc.broadcast(meta["rated_items"]) if meta["valid_ratings"] else None
            try:  # a failed fit leaves the model (separate mode), and says so
                with Training(ps, name, "mf_sgd", config, replicas=self._value("replicas"),
                              what="MFSGD.fit"):
                    rng = np.random.default_rng(self._value("seed"))
                    every = np.arange(meta["n_items"])
                    client.run(push_item_side(
                        client.aio, name, every, rng.normal(0, 0.1, (meta["n_items"], rank))
                        .astype(np.float32), np.zeros(meta["n_items"], np.float32)))
                    job = {k: self._value(k) for k in (
                        "rank", "maxIter", "regParam", "stepSize", "decay", "biases", "schedule",
                        "seed", "batchSize", "numConcurrentBatches")}
                    job.update(master=ps.master, name=name, mu=meta["mu"],
                               n_items=meta["n_items"], parts=parts)
                    data = dataset.select(
                        id_column(user).alias("user"), id_column(item).alias("item"),
                        F.col(rating).cast("float").alias("rating"),
                        (F.col(valid) if valid else F.lit(False)).alias("valid"),
                    ).repartition(parts, "user")
                    with EpochLog(client, name, epochs, parts, rated is not None) as progress:
                        users = data.mapInArrow(Train(job, rated), USERS_SCHEMA,
                                                barrier=True).toArrow()
                    state.item_factors_, state.item_bias_ = client.run(
                        pull_item_side(client.aio, name, every))
                    state.history_ = progress.history
            finally:
                if rated is not None:
                    rated.destroy()
            client.destroy(name)  # the fitted model needs no server: nothing stays on it
        user_ids = arrow.ids(users.column("id"))
        state.user_factors_ = np.zeros((meta["n_users"], rank), np.float32)
        state.user_bias_ = np.zeros(meta["n_users"], np.float32)
        if user_ids.size:
            flat = users.column("features").combine_chunks()
            state.user_factors_[user_ids] = flat.values.to_numpy(zero_copy_only=False).reshape(
                user_ids.size, rank)
            state.user_bias_[user_ids] = users.column("bias").to_numpy()
        state.global_mean_, state.train_ = meta["mu"], None
        rated_users = np.zeros(meta["n_users"], bool)
        rated_users[user_ids] = True
        return self._copyValues(MFSGDModel(state, rated_users, meta["rated_items"]))


class MFSGDModel(Model, _MFSGDParams, MLWritable, MLReadable):
    """A fitted MF-SGD: factors and biases in the driver (broadcast to the scoring tasks),
    so it predicts and recommends without a parameter server. Only rated users and items
    are known: the others are cold-start (coldStartStrategy) and never recommended."""

    def __init__(self, state: LocalMFSGD | None = None, rated_users=None,
                 rated_items=None) -> None:
        super().__init__()
        self.state, self.rated_users, self.rated_items = state, rated_users, rated_items

    @property
    def history(self) -> list[dict]:
        """Per epoch of fit: epoch, train_rmse, valid_rmse (None without a
        validationIndicatorCol), seconds, updates."""
        return getattr(self.state, "history_", [])

    def _shipped(self, spark):
        pin_local_interpreter(spark.sparkContext)
        return spark.sparkContext.broadcast(self)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._check_columns(dataset.schema, ("userCol", "itemCol"))
        names = dataset.columns
        prediction = self._value("predictionCol")
        schema = T.StructType(dataset.schema.fields + [T.StructField(prediction,
                                                                     T.FloatType())])
        out = dataset.mapInArrow(_Predict(self._shipped(dataset.sparkSession), names,
                                          self._value("userCol"), self._value("itemCol"),
                                          prediction), schema)
        if self._value("coldStartStrategy") == "drop":
            out = out.where(~F.isnan(prediction))
        return out

    def _scores(self, side: str) -> tuple[np.ndarray, ...]:
        """(queries, targets, query bias, target bias, rated queries) for recommending on
        `side`; targets never rated get -inf."""
        s = self.state
        users = (s.user_factors_, s.user_bias_ + np.float32(s.global_mean_), self.rated_users)
        items = (s.item_factors_, s.item_bias_.astype(np.float32), self.rated_items)
        (q, qb, rated), (t, tb, known) = (users, items) if side == "user" else (items, users)
        return q, t, qb, np.where(known, tb, -np.inf).astype(np.float32), rated

    def _recommend(self, ids: DataFrame, side: str, n) -> DataFrame:
        if (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise ConfigError(f"the number of recommendations must be a positive integer, "
                              f"got {n!r}")
        this, other = ((self._value("userCol"), self._value("itemCol")) if side == "user"
                       else (self._value("itemCol"), self._value("userCol")))
        schema = T.StructType([T.StructField(this, T.LongType()), T.StructField(
            "recommendations", T.ArrayType(T.StructType([
                T.StructField(other, T.LongType()), T.StructField("rating", T.FloatType())])))])
        return ids.mapInArrow(_Recommend(self._shipped(ids.sparkSession), side, int(n),
                                         (this, other)), schema)

    def _rated(self, side: str) -> DataFrame:
        from pyspark.sql import SparkSession
        rated = np.flatnonzero(self.rated_users if side == "user" else self.rated_items)
        return SparkSession.active().createDataFrame(pa.table({"id": pa.array(rated)}))

    def _subset(self, dataset: DataFrame, side: str) -> DataFrame:
        column = self._value("userCol" if side == "user" else "itemCol")
        self._check_columns(dataset.schema, ("userCol" if side == "user" else "itemCol",))
        return dataset.select(id_column(column).alias("id")).where("id IS NOT NULL").distinct()

    def recommendForAllUsers(self, numItems: int) -> DataFrame:
        """Top `numItems` items per rated user, as ALS: (userCol, recommendations:
        array<struct<itemCol, rating>>)."""
        return self._recommend(self._rated("user"), "user", numItems)

    def recommendForUserSubset(self, dataset: DataFrame, numItems: int) -> DataFrame:
        return self._recommend(self._subset(dataset, "user"), "user", numItems)

    def recommendForAllItems(self, numUsers: int) -> DataFrame:
        """Top `numUsers` users per rated item: (itemCol, recommendations:
        array<struct<userCol, rating>>)."""
        return self._recommend(self._rated("item"), "item", numUsers)

    def recommendForItemSubset(self, dataset: DataFrame, numUsers: int) -> DataFrame:
        return self._recommend(self._subset(dataset, "item"), "item", numUsers)

    def _factors(self, side: str) -> DataFrame:
        from pyspark.sql import SparkSession
        s = self.state
        known = self.rated_users if side == "user" else self.rated_items
        factors = s.user_factors_ if side == "user" else s.item_factors_
        bias = s.user_bias_ if side == "user" else s.item_bias_
        ids = np.flatnonzero(known)
        return SparkSession.active().createDataFrame(pa.table({
            "id": pa.array(ids), "features": arrow.rows_to_lists(factors[ids]),
            "bias": pa.array(bias[ids].astype(np.float32))}))

    @property
    def userFactors(self) -> DataFrame:
        """(id, features, bias) of every rated user, as ALS's (plus the bias)."""
        return self._factors("user")

    @property
    def itemFactors(self) -> DataFrame:
        """(id, features, bias) of every rated item."""
        return self._factors("item")

    def write(self) -> MLWriter:
        return ml.ModelWriter(self, _save, {"history": self.history})

    @classmethod
    def read(cls) -> MLReader:
        def build(meta: dict, data, reader) -> "MFSGDModel":
            with np.load(data / "rated.npz") as f:
                return cls(LocalMFSGD.load(data / "mf_sgd.npz"), f["users"], f["items"])
        return ml.ModelReader(cls, build)


class _Predict:
    def __init__(self, model, names: list[str], user: str, item: str, prediction: str) -> None:
        self.model, self.names, self.user, self.item = model, names, user, item
        self.prediction = prediction

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        me = self.model.value
        for batch in batches:
            users, items = arrow.ids(batch.column(self.user)), arrow.ids(batch.column(self.item))
            known = ((users >= 0) & (users < me.rated_users.size) & (items >= 0)
                     & (items < me.rated_items.size))
            known[known] &= me.rated_users[users[known]] & me.rated_items[items[known]]
            out = np.full(batch.num_rows, np.nan, np.float32)
            if known.any():
                out[known] = me.state.predict(users[known], items[known])
            yield pa.RecordBatch.from_arrays([batch.column(n) for n in self.names]
                                             + [pa.array(out)],
                                             names=self.names + [self.prediction])


class _Recommend:
    def __init__(self, model, side: str, n: int, names: tuple[str, str]) -> None:
        self.model, self.side, self.n, self.names = model, side, n, names

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from models.recommend import top_k
        me = self.model.value
        queries, targets, qb, tb, rated = me._scores(self.side)
        for batch in batches:
            ids = arrow.ids(batch.column("id"))
            ids = ids[(ids >= 0) & (ids < len(queries))]
            ids = ids[rated[ids]]  # only ids rated in training are in the model, as ALS
            if not ids.size:
                continue
            top, scores = top_k(queries[ids], targets, self.n, query_bias=qb[ids],
                                target_bias=tb)
            yield recommendations(ids, top, scores, self.names)


PARAMS = ml.param_names(_MFSGDParams)
ml.add_accessors(_MFSGDParams, PARAMS, setters=False)
ml.add_accessors(MFSGD, PARAMS, setters=True)
ml.copy_setters(MFSGDModel, MFSGD, ("userCol", "itemCol", "predictionCol", "coldStartStrategy"))


def _save(m: MFSGDModel, data) -> None:
    m.state.save(data / "mf_sgd.npz")
    with open(data / "rated.npz", "wb") as f:
        np.savez(f, users=m.rated_users, items=m.rated_items)

