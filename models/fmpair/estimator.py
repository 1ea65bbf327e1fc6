"""`FMPair`: FMPair as a pyspark.ml Estimator; Spark executors train it on the parameter
server (the Glint-FMPair way), and `FMPairModel` recommends without one.

    from models.fmpair import FMPair
    model = FMPair(numDims=64, maxIter=10).fit(interactions)      # integrated mode
    model.recommendForAllUsers(10).show()

`fit` computes the metadata by aggregations on Spark (id ranges, and per item its
popularity, features and sampling attribute: O(items) on the driver, broadcast to the
tasks), starts a `SparkParameterServer` (master on the driver, `numParameterServers`
shards on executors) or uses the one at `parameterServerHost`, repartitions the
interactions by user and runs one Spark job for all epochs (one per `checkpointInterval`
epochs when it checkpoints): a barrier stage in which every partition builds its users'
positives (and the training items its sampler must skip) from its Arrow batches once and
trains them, epoch after epoch, with the FMPair worker loop
(`models.fmpair.spark_job.EpochsTask`) through its executor's client — asynchronous
workers of the parameter server, each at its own pace. Nothing per interaction reaches
the driver. The tasks add each epoch's loss and pairs into a progress matrix on the
parameter server, and the driver logs every epoch from it while the job runs
(`models.fmpair.spark_job.EpochLog`). The parameters are then pulled into the model, so
recommending, scoring and saving need no parameter server; in integrated mode it stops
after `fit`.
Recommending and scoring run on the executors in Arrow blocks
(`models.fmpair.spark_scoring`).
"""

from __future__ import annotations

import logging
import numbers
import uuid
from pathlib import Path

import numpy as np
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.util import (
    DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLReader, MLWritable, MLWriter,
)
from pyspark.sql import DataFrame, functions as F, types as T

from psframework import ConfigError, PSError
from psframework.spark import (
    SparkParameterServer, Training, checkpoint_settings, ml, pin_local_interpreter,
)
from models.fmpair.local import LocalFMPair
from models.fmpair.spec import SPEC
from models.fmpair.spark_job import PROGRESS_COLUMNS, EpochLog, EpochsTask, Metadata
from models.fmpair.spark_scoring import Factors, Recommend, Score
from models.memory import ensure_memory, from_job_failure

__all__ = ["FMPair", "FMPairModel"]

log = logging.getLogger("models.fmpair")

INTEGER_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)



class _FMPairParams(ml.ParamValues):
    """The params of FMPair and FMPairModel: from `models.fmpair.spec.SPEC` (defaults as
    in the Glint fork)."""

    def _check(self) -> None:
        """Every param, before anything starts; errors name the param."""
        self._check_spec()

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

    # -- training ------------------------------------------------------------------------
    def _fit(self, dataset: DataFrame) -> "FMPairModel":
        self._check()
        self._check_columns(dataset.schema, training=True)
        pin_local_interpreter(dataset.sparkSession.sparkContext)  # metadata runs Python tasks
        meta = Metadata.compute(self, dataset)
        host = self._value("parameterServerHost")
        spark = dataset.sparkSession
        every = self._value("checkpointInterval")
        ps = SparkParameterServer(spark, None if host else self._value("numParameterServers"),
                                  host=host, **({} if host else checkpoint_settings(spark, every)))
        with ps:
            name = f"fmpair-{uuid.uuid4().hex[:12]}"
            client = ps.client()
            config = {"n_features": meta.space.n_features,
                      **{h.name: self._value(h.spark) for h in SPEC if h.plugin and h.spark}}
            # a failed fit leaves the model (separate mode) and its checkpoints, and says so
            with Training(ps, name, "fmpair", config, replicas=self._value("replicas"),
                          every=every, resume_from=self._value("resumeFrom"),
                          what="FMPair.fit") as training:
                history = self._train(spark, dataset, meta, ps.master, name, training)
                n = meta.space.n_features
                ensure_memory(n * (self._value("numDims") + 1) * 4 * 2,
                              f"FMPair.fit pulling {n:,} features' parameters to the driver",
                              "give the driver more memory (spark.driver.memory)")
                every_feature = np.arange(n)
                state = LocalFMPair(dims=self._value("numDims"))
                state.factors_ = client.pull_rows(name, "factors", every_feature)
                state.linear_ = client.pull_rows(name, "linear", every_feature)
            state.space_, state.train_ = meta.space, None  # training items stay in Spark
            state.history_ = history
            keep = not ps.integrated  # a separate cluster keeps it until destroy()
            model = FMPairModel(state, meta.users, ps.master if keep else None,
                                name if keep else None)
        return self._copyValues(model)

    def _train(self, spark, dataset: DataFrame, meta: "Metadata", master: str,
               name: str, training: Training) -> list[dict]:
        cols = [F.col(self._value("userCol")).cast("long").alias("user"),
                F.col(self._value("itemCol")).cast("long").alias("item")]
        if self._value("userctxfeaturesCol"):
            cols.append(F.col(self._value("userctxfeaturesCol")).alias("context"))
        sc = spark.sparkContext
        parts = max(sc.defaultParallelism, 1)
        data = dataset.select(*cols).repartition(parts, "user").persist()
        shared = sc.broadcast({"item": meta.space.item, "attribute": meta.attribute,
                               "popularity": meta.popularity, "n_users": meta.n_users,
                               "n_items": meta.n_items, "context_width": meta.context_width})
        job = {k: self._value(k) for k in ("sampler", "loss", "rho", "seed", "batchSize",
                                           "numNegatives", "numConcurrentBatches")}
        total = self._value("maxIter")
        client = training.ps.client()
        progress = f"{name}-progress"  # the tasks' epoch rows, read live by EpochLog
        client.create_matrix(progress, total, PROGRESS_COLUMNS, "float64", exists_ok=True,
                             replicas=training.replicas)  # survives what the model does
        job.update(master=master, name=name, epochs=total, progress=progress)
        # one Spark job for all epochs, or for each run of checkpointInterval epochs
        every = training.every or total
        try:
            with EpochLog(client, progress, total, parts, training.first) as epochs_log:
                for first in range(training.first, total, every):
                    epochs = range(first, min(first + every, total))
                    step = f"FMPair epochs {epochs.start + 1}-{epochs.stop}/{total}"
                    sc.setJobDescription(step)
                    try:
                        data.mapInArrow(EpochsTask(job, shared, epochs), "epoch int",
                                        barrier=True).collect()
                    except Exception as e:
                        memory = from_job_failure(e, step)
                        if memory is None:
                            raise
                        raise memory from e
                    training.epoch_done(epochs.stop - 1)
            return epochs_log.history
        finally:
            sc.setJobDescription(None)
            data.unpersist()
            shared.unpersist()
            try:
                client.destroy(progress)
            except PSError as e:  # a failing cluster: the fit's own error is what matters
                log.warning("FMPair.fit could not destroy its progress matrix %r: %s",
                            progress, e)


class FMPairModel(Model, _FMPairParams, MLWritable, MLReadable):
    """A fitted FMPair. Its parameters live in the driver and travel to executors by
    broadcast (O(features × numDims)); what it knows per user (the items to leave out,
    the context fit saw) is the DataFrame `users`, so it recommends and scores on the
    executors, in Arrow blocks, without a parameter server."""

    def __init__(self, state: LocalFMPair | None = None, users: DataFrame | None = None,
                 ps_master: str | None = None, ps_model: str | None = None) -> None:
        super().__init__()
        self.state, self.users = state, users
        self.ps_master, self.ps_model = ps_master, ps_model

    @property
    def history(self) -> list[dict]:
        """Per epoch of fit: loss, pairs, seconds."""
        return getattr(self.state, "history_", [])

    @property
    def _has_context(self) -> bool:
        return self.state.space_.n_context_features > 0

    def _broadcast(self, spark):
        """The parameters, for this model's Python tasks (which must run an interpreter
        that has psframework: see pin_local_interpreter)."""
        pin_local_interpreter(spark.sparkContext)
        return spark.sparkContext.broadcast(self.state)

    def _known_users(self, *columns: str) -> DataFrame:
        """`users` with `columns` and, if the model has context, the context fit saw as
        `_fit_context`."""
        fit = [F.col("context").alias("_fit_context")] if self._has_context else []
        return self.users.select(*columns, *fit)

    def _with_fit_context(self, df: DataFrame, key) -> DataFrame:
        """`df` with the context fit saw for its user (key) as `_fit_context`, if any."""
        if not self._has_context:
            return df
        fit = self._known_users(F.col("id").alias("_fit_id"))
        return df.join(fit, key == fit["_fit_id"], "left").drop("_fit_id")

    # -- scoring -------------------------------------------------------------------------
    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._check_columns(dataset.schema, training=False)
        u, i = self._value("userCol"), self._value("itemCol")
        if i not in dataset.columns:
            raise ConfigError(f"FMPairModel.transform needs the item column {i!r}")
        ctx = self._value("userctxfeaturesCol")
        given = ctx if ctx in dataset.columns and self._has_context else None
        names = dataset.columns
        scored = self._with_fit_context(dataset, dataset[u].cast("long"))
        schema = T.StructType(dataset.schema.fields + [
            T.StructField(self._value("predictionCol"), T.DoubleType())])
        task = Score(self._broadcast(dataset.sparkSession), names, u, i, given,
                      self._value("predictionCol"))
        return scored.mapInArrow(task, schema)

    def recommendForAllUsers(self, numItems: int) -> DataFrame:
        """The top `numItems` for every user with training interactions, best first, as
        pyspark's ALS: (userCol, recommendations: array<struct<itemCol, rating>>)."""
        return self._recommend(self._known_users("id", "exclude"), numItems, given=False,
                               blocked=False)

    def recommendForUserSubset(self, dataset: DataFrame, numItems: int) -> DataFrame:
        """The top `numItems` for each distinct user of `dataset`, leaving out their
        training items, the items fit saw in filterItemsCol, and those in the dataset's
        filterItemsCol (if it has one). With a userctxfeaturesCol in the dataset, its
        first vector per user is the context; otherwise the one fit saw."""
        self._check_columns(dataset.schema, training=False)
        u = self._value("userCol")
        ctx, flt = self._value("userctxfeaturesCol"), self._value("filterItemsCol")
        ctx = ctx if ctx in dataset.columns and self._has_context else None
        flt = flt if flt in dataset.columns else None
        n_users = self.state.space_.n_users
        key = F.col(u).cast("long")
        asked = dataset.where(key.isNotNull() & (key >= 0) & (key < n_users))
        aggs = [F.lit(1).alias("_one")]
        if ctx:
            aggs.append(F.first(ctx, ignorenulls=True).alias("_given"))
        if flt:
            blocked = F.collect_list(F.col(flt).cast("array<long>"))
            aggs.append(F.flatten(blocked).alias("_blocked"))
        asked = asked.groupBy(key.alias("id")).agg(*aggs).drop("_one")
        return self._recommend(asked.join(self._known_users("id", "exclude"), "id", "left"),
                               numItems, given=bool(ctx), blocked=bool(flt))

    def _recommend(self, users: DataFrame, numItems, *, given: bool, blocked: bool
                   ) -> DataFrame:
        if (isinstance(numItems, bool) or not isinstance(numItems, numbers.Integral)
                or numItems < 1):  # numpy integers too
            raise ConfigError(f"numItems must be a positive integer, got {numItems!r}")
        u, i = self._value("userCol"), self._value("itemCol")
        schema = T.StructType([
            T.StructField(u, T.LongType()),
            T.StructField("recommendations", T.ArrayType(T.StructType([
                T.StructField(i, T.LongType()), T.StructField("rating", T.FloatType())])))])
        task = Recommend(self._broadcast(users.sparkSession), int(numItems), (u, i),
                          given=given, blocked=blocked)
        return users.mapInArrow(task, schema)

    @property
    def userFactors(self) -> DataFrame:
        """(id, features): each user's representation Σ x_g v_g over its features (with
        userctxfeaturesCol: the context fit saw for the user)."""
        from pyspark.sql import SparkSession
        spark = SparkSession.active()
        users = self._with_fit_context(spark.range(self.state.space_.n_users), F.col("id"))
        return users.mapInArrow(Factors(self._broadcast(spark), "user"),
                                "id long, features array<float>")

    @property
    def itemFactors(self) -> DataFrame:
        """(id, features, bias): each item's Σ x_f v_f and Σ x_f w_f."""
        from pyspark.sql import SparkSession
        spark = SparkSession.active()
        return spark.range(self.state.space_.n_items).mapInArrow(
            Factors(self._broadcast(spark), "item"), "id long, features array<float>, bias float")

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
        return ml.ModelWriter(self, _save, {"ps_master": self.ps_master,
                                            "ps_model": self.ps_model, "history": self.history})

    @classmethod
    def read(cls) -> MLReader:
        return ml.ModelReader(cls, lambda meta, data, reader: _build(cls, meta, data, reader))


ml.declare(_FMPairParams, SPEC)
ml.keyword_init(FMPair)
# what changes how a fitted model reads its input, as ALSModel allows
ml.copy_setters(FMPairModel, FMPair, ("userCol", "itemCol", "userctxfeaturesCol",
                                      "filterItemsCol", "predictionCol"))


def _save(m: FMPairModel, data: Path) -> None:
    m.state.save(data / "fmpair.npz")
    # per user, written by the executors: nothing per user passes the driver
    m.users.write.mode("overwrite").parquet(data.resolve().as_uri() + "/users")


def _build(cls: type, meta: dict, data: Path, reader) -> FMPairModel:
    state = LocalFMPair.load(data / "fmpair.npz")
    state.history_ = meta.get("history", [])
    users = reader.sparkSession.read.parquet(data.resolve().as_uri() + "/users")
    return cls(state, users, meta.get("ps_master"), meta.get("ps_model"))
