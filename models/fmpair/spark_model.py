"""`FMPairModel`: a fitted `FMPair` (models.fmpair.estimator). Its parameters live in the
driver, so recommending, scoring and saving need no parameter server; recommending and
scoring run on the executors in Arrow blocks (`models.fmpair.spark_scoring`). Saved as
pyspark.ml's metadata beside the parameters (`fmpair.npz`) and, per user, a Parquet
table written by the executors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyspark.ml import Model
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import Column, DataFrame, functions as F, types as T

from psframework import ConfigError
from psframework.spark import SparkParameterServer, arrow, ml, pin_local_interpreter
from models.fmpair.spark_params import FMPairParams
from models.fmpair.local import LocalFMPair
from models.fmpair.spark_scoring import Factors, Recommend, Score
from models.spark_evaluation import rank_fields
from models.spark_estimator import (
    TopK, cold_start, held, int_id, int_ids, model_reader, model_writer, need_count,
    recommendations_schema,
)

__all__ = ["FMPairModel"]


class FMPairModel(Model, FMPairParams, MLWritable, MLReadable):
    """A fitted FMPair. Its parameters live in the driver and travel to executors by
    broadcast (O(features × numDims)); what it knows per user (the items to leave out,
    the context fit saw) is the DataFrame `users`, so it recommends and scores on the
    executors, in Arrow blocks, without a parameter server."""

    def __init__(self, state: LocalFMPair | None = None, users: DataFrame | None = None,
                 ps_master: str | None = None, ps_model: str | None = None) -> None:
        super().__init__()
        self.state, self.users = state, users
        self.ps_master, self.ps_model = ps_master, ps_model
        self.history: list[dict] = []  # per epoch of fit: epoch, loss, pairs, seconds

    @property
    def _state(self) -> LocalFMPair:
        return held(self.state, self, "parameters")

    @property
    def _users(self) -> DataFrame:
        return held(self.users, self, "users")

    @property
    def rank(self) -> int:
        """The latent dimensions (numDims), as ALSModel.rank."""
        return int(self._state.factors_.shape[1])

    @property
    def _has_context(self) -> bool:
        return self._state.space_.n_context_features > 0

    def _broadcast(self, spark):
        """The parameters, for this model's Python tasks (which must run an interpreter
        that has psframework: see pin_local_interpreter)."""
        pin_local_interpreter(spark.sparkContext)
        return spark.sparkContext.broadcast(self._state)

    def _known_users(self, *columns: str | Column) -> DataFrame:
        """`users` with `columns` and, if the model has context, the context fit saw as
        `_fit_context`."""
        fit = [F.col("context").alias("_fit_context")] if self._has_context else []
        return self._users.select(*columns, *fit)

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
        dataset = int_ids(dataset, (u, i), "FMPairModel.transform")  # as ALS gives them
        ctx = self._value("userctxfeaturesCol")
        given = ctx if ctx in dataset.columns and self._has_context else None
        names = dataset.columns
        rank = self._value("rankCol")
        if rank:  # the user's training items and fit context, and whether fit saw it
            known = self._known_users(F.col("id").alias("_fit_id"),
                                      F.col("exclude").alias("_exclude"))
            scored = dataset.join(known, dataset[u].cast("long") == known["_fit_id"], "left")
        else:
            scored = self._with_fit_context(dataset, dataset[u].cast("long"))
        schema = T.StructType(dataset.schema.fields + [
            T.StructField(self._value("predictionCol"), T.DoubleType())]
            + (rank_fields(rank) if rank else []))
        task = Score(self._broadcast(dataset.sparkSession), names, u, i, given,
                      self._value("predictionCol"), rank)
        return cold_start(scored.mapInArrow(task, schema), self)

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
        n_users = self._state.space_.n_users
        key = int_id(u, "FMPairModel.recommendForUserSubset")
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
        n = need_count(numItems, "numItems")
        u, i = self._value("userCol"), self._value("itemCol")
        task = Recommend(self._broadcast(users.sparkSession), n, (u, i), given=given,
                         blocked=blocked)
        return users.mapInArrow(task, recommendations_schema(u, i))

    def recommendForAllItems(self, numUsers: int) -> DataFrame:
        """The top `numUsers` users for every item, best first, as ALS: (itemCol,
        recommendations: array<struct<userCol, rating>>). The candidates are the users
        with training interactions, scored with the context fit saw; an item's own
        training users (and those whose filterItemsCol held it) are left out."""
        from pyspark.sql import SparkSession
        spark = SparkSession.active()
        return self._recommend_users(spark.range(self._state.space_.n_items), numUsers)

    def recommendForItemSubset(self, dataset: DataFrame, numUsers: int) -> DataFrame:
        """The top `numUsers` users for each distinct item of `dataset` (its itemCol), as
        recommendForAllItems; unknown items get no row."""
        self._check_columns(dataset.schema, training=False, key="itemCol")
        key = int_id(self._value("itemCol"), "FMPairModel.recommendForItemSubset")
        return self._recommend_users(
            dataset.select(key.alias("id")).where("id IS NOT NULL").distinct(), numUsers)

    def _recommend_users(self, items: DataFrame, numUsers) -> DataFrame:
        """`items` (id) to their top users (`TopK`): the items' vectors and biases are the
        queries, the training users' representations (collected to the driver: what the
        model already holds per user) the targets."""
        n = need_count(numUsers, "numUsers")
        u, i = self._value("userCol"), self._value("itemCol")
        me, spark = self._state, items.sparkSession
        pin_local_interpreter(spark.sparkContext)
        factors = self._user_factors(self._users.select("id")).toArrow()
        ids = arrow.ids(factors.column("id"))
        targets = np.zeros((me.space_.n_users, self.rank), np.float32)
        flat = factors.column("features").combine_chunks().values
        targets[ids] = flat.to_numpy(zero_copy_only=False).reshape(ids.size, self.rank)
        target_bias = np.full(me.space_.n_users, -np.inf, np.float32)
        target_bias[ids] = 0  # only users fit saw are recommended
        vectors, bias = me.item_representations()
        scoring = spark.sparkContext.broadcast(
            (vectors, targets, bias.astype(np.float32), target_bias,
             np.ones(me.space_.n_items, bool)))
        # per item, the users to leave out: those whose `exclude` holds it
        left_out = (self._users.select("id", F.explode("exclude").alias("item"))
                    .groupBy("item").agg(F.collect_list("id").alias("exclude")))
        asked = items.join(left_out, items["id"] == left_out["item"], "left").drop("item")
        return asked.mapInArrow(TopK(scoring, n, (i, u), exclude=True),
                                recommendations_schema(i, u))

    @property
    def userFactors(self) -> DataFrame:
        """(id, features): each user's representation Σ x_g v_g over its features (with
        userctxfeaturesCol: the context fit saw for the user)."""
        from pyspark.sql import SparkSession
        spark = SparkSession.active()
        return self._user_factors(spark.range(self._state.space_.n_users))

    def _user_factors(self, ids: DataFrame) -> DataFrame:
        """userFactors of the users `ids` (id)."""
        users = self._with_fit_context(ids, F.col("id"))
        return users.mapInArrow(Factors(self._broadcast(ids.sparkSession), "user"),
                                "id long, features array<float>").withColumn(
            "id", F.col("id").cast("int"))

    @property
    def itemFactors(self) -> DataFrame:
        """(id, features, bias): each item's Σ x_f v_f and Σ x_f w_f."""
        from pyspark.sql import SparkSession
        spark = SparkSession.active()
        return spark.range(self._state.space_.n_items).mapInArrow(
            Factors(self._broadcast(spark), "item"), "id long, features array<float>, bias float"
        ).withColumn("id", F.col("id").cast("int"))

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
        return model_writer(self, _save, ps_master=self.ps_master, ps_model=self.ps_model)

    @classmethod
    def read(cls) -> MLReader:
        return model_reader(cls, lambda meta, data, reader: _build(cls, meta, data, reader))



# what changes how a fitted model reads its input, as ALSModel allows
ml.add_accessors(FMPairModel, ("userCol", "itemCol", "userctxfeaturesCol", "filterItemsCol",
                               "predictionCol", "rankCol"), setters=True)



def _save(m: FMPairModel, data: Path) -> None:
    m._state.save(data / "fmpair.npz")
    # per user, written by the executors: nothing per user passes the driver
    m._users.write.mode("overwrite").parquet(data.resolve().as_uri() + "/users")


def _build(cls: type, meta: dict, data: Path, reader) -> FMPairModel:
    state = LocalFMPair.load(data / "fmpair.npz")
    users = reader.sparkSession.read.parquet(data.resolve().as_uri() + "/users")
    return cls(state, users, meta.get("ps_master"), meta.get("ps_model"))
