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

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.ml import Estimator, Model
from pyspark.ml.util import (
    DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLReader, MLWritable, MLWriter,
)
from pyspark.sql import DataFrame, functions as F, types as T

from psframework import ConfigError
from psframework.spark import arrow, ml, pin_local_interpreter
from models.spark_evaluation import candidate_ranks, candidates_column, rank_arrays, rank_fields
from models.mf_sgd.local import LocalMFSGD
from models.mf_sgd.spark_job import USERS_SCHEMA, EpochLog, Train, id_column, metadata
from models.mf_sgd.spec import SPEC
from models.mf_sgd.worker import pull_item_side, push_item_side
from models.spark_estimator import (
    TopK, check_columns, cold_start, held, int_ids, model_reader, model_writer, need_count,
    recommendations_schema, spark_jobs, start_parameter_server, training,
)

__all__ = ["MFSGD", "MFSGDModel"]



class _MFSGDParams(ml.ParamValues):
    """The params of MFSGD and MFSGDModel: from `models.mf_sgd.spec.SPEC` (ALS's names
    and defaults)."""

    def _check_columns(self, schema: T.StructType, names: Iterable[str]) -> None:
        kinds = {"userCol": "id", "itemCol": "id", "ratingCol": "number",
                 "validationIndicatorCol": "boolean"}
        check_columns(self, schema, {n: kinds[n] for n in names}, "MFSGD")


class MFSGD(Estimator, _MFSGDParams, DefaultParamsWritable, DefaultParamsReadable):
    """Matrix factorization by SGD on the parameter server (docs/mf_sgd.md)."""

    def _fit(self, dataset: DataFrame) -> "MFSGDModel":
        self._check_spec()
        valid = self._value("validationIndicatorCol")
        self._check_columns(dataset.schema, ("userCol", "itemCol", "ratingCol")
                            + (("validationIndicatorCol",) if valid else ()))
        sc = dataset.sparkSession.sparkContext
        pin_local_interpreter(sc)
        user, item, rating = (self._value(n) for n in ("userCol", "itemCol", "ratingCol"))
        with spark_jobs(sc, "MFSGD.fit reading its ratings"):
            meta = metadata(dataset, user, item, rating, valid, self._value("biases"))
        parts = max(sc.defaultParallelism, 1)
        epochs, rank = self._value("maxIter"), self._value("rank")
        state = LocalMFSGD(rank=rank, epochs=epochs, step_size=self._value("stepSize"),
                           decay=self._value("decay"), reg=self._value("regParam"),
                           biases=self._value("biases"), schedule=self._value("schedule"),
                           seed=self._value("seed"), show_progress=False)
        with start_parameter_server(self, dataset.sparkSession) as ps:
            client = ps.client()
            config = {"n_items": meta["n_items"], "rank": rank,
                      "schedule": self._value("schedule"), "epochs": epochs}
            rated = sc.broadcast(meta["rated_items"]) if meta["valid_ratings"] else None
            try:  # a failed fit leaves the model (separate mode), and says so
                with training(self, ps, "mf_sgd", config, "MFSGD.fit") as run:
                    name = run.name
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
        # per rated user, the items it rated (for rankCol): computed when used, as FMPair's
        trained = dataset.where(~F.col(valid)) if valid else dataset
        rated_by = trained.groupBy(id_column(user).alias("id")).agg(
            F.collect_set(id_column(item)).alias("exclude"))
        model = MFSGDModel(state, rated_users, meta["rated_items"], rated_by)
        model.history = state.history_
        return self._copyValues(model)


class MFSGDModel(Model, _MFSGDParams, MLWritable, MLReadable):
    """A fitted MF-SGD: factors and biases in the driver (broadcast to the scoring tasks),
    so it predicts and recommends without a parameter server. Only rated users and items
    are known: the others are cold-start (coldStartStrategy) and never recommended."""

    def __init__(self, state: LocalMFSGD | None = None, rated_users=None,
                 rated_items=None, users: DataFrame | None = None) -> None:
        super().__init__()
        self.state, self.rated_users, self.rated_items = state, rated_users, rated_items
        self.users = users  # (id, exclude): each rated user's training items, for rankCol
        # per epoch of fit: epoch, train_rmse, valid_rmse (None without a
        # validationIndicatorCol), seconds, updates
        self.history: list[dict] = []

    def __getstate__(self) -> dict:
        """What the scoring tasks get (by broadcast): not the DataFrame `users`."""
        return {**self.__dict__, "users": None}

    @property
    def _state(self) -> LocalMFSGD:
        return held(self.state, self, "parameters")

    @property
    def rank(self) -> int:
        """The latent dimensions, as ALSModel.rank (MFSGD's param `rank`)."""
        return int(self._state.item_factors_.shape[1])

    def getRank(self) -> int:
        return self.rank

    def _shipped(self, spark):
        pin_local_interpreter(spark.sparkContext)
        return spark.sparkContext.broadcast(self)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._check_columns(dataset.schema, ("userCol", "itemCol"))
        dataset = int_ids(dataset, (self._value("userCol"), self._value("itemCol")),
                          "MFSGDModel.transform")  # as ALS gives them
        names = dataset.columns
        prediction, rank = self._value("predictionCol"), self._value("rankCol")
        schema = T.StructType(dataset.schema.fields + [T.StructField(prediction,
                                                                     T.FloatType())]
                              + (rank_fields(rank) if rank else []))
        if rank:  # each row's user's training items, and whether fit saw the user
            if self.users is None:
                raise ConfigError("MFSGDModel.transform with rankCol needs each user's "
                                  "training items, which this model does not have (saved "
                                  "before they were kept): fit it again")
            known = self.users.select(F.col("id").alias("_fit_id"),
                                      F.col("exclude").alias("_exclude"))
            dataset = dataset.join(known, id_column(self._value("userCol"))
                                   == known["_fit_id"], "left")
        out = dataset.mapInArrow(_Predict(self._shipped(dataset.sparkSession), names,
                                          self._value("userCol"), self._value("itemCol"),
                                          prediction, rank), schema)
        return cold_start(out, self)

    def _scores(self, side: str) -> tuple[np.ndarray, ...]:
        """(queries, targets, query bias, target bias, rated queries) for recommending on
        `side`; targets never rated get -inf."""
        s = self._state
        users = (s.user_factors_, s.user_bias_ + np.float32(s.global_mean_), self.rated_users)
        items = (s.item_factors_, s.item_bias_.astype(np.float32), self.rated_items)
        (q, qb, rated), (t, tb, known) = (users, items) if side == "user" else (items, users)
        return q, t, qb, np.where(known, tb, -np.inf).astype(np.float32), rated

    def _recommend(self, ids: DataFrame, side: str, n) -> DataFrame:
        n = need_count(n, "numItems" if side == "user" else "numUsers")
        this, other = ((self._value("userCol"), self._value("itemCol")) if side == "user"
                       else (self._value("itemCol"), self._value("userCol")))
        pin_local_interpreter(ids.sparkSession.sparkContext)
        scoring = ids.sparkSession.sparkContext.broadcast(self._scores(side))
        return ids.mapInArrow(TopK(scoring, n, (this, other)),
                              recommendations_schema(this, other))

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
        s = self._state
        known = self.rated_users if side == "user" else self.rated_items
        factors = s.user_factors_ if side == "user" else s.item_factors_
        bias = s.user_bias_ if side == "user" else s.item_bias_
        ids = np.flatnonzero(known)
        return SparkSession.active().createDataFrame(pa.table({
            "id": pa.array(ids.astype(np.int32)), "features": arrow.rows_to_lists(factors[ids]),
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
        return model_writer(self, _save)

    @classmethod
    def read(cls) -> MLReader:
        def build(meta: dict, data, reader) -> "MFSGDModel":
            users = None
            if (data / "users").exists():
                users = reader.sparkSession.read.parquet(data.resolve().as_uri() + "/users")
            with np.load(data / "rated.npz") as f:
                return cls(LocalMFSGD.load(data / "mf_sgd.npz"), f["users"], f["items"],
                           users)
        return model_reader(cls, build)


class _Predict:
    """mapInArrow: rows with the predicted rating and, with `rank` (the rankCol), the
    item's rank among the user's candidates, rated items but its own
    (`models.spark_evaluation.candidate_ranks`, each user of a batch scored once): the rows
    then carry `_fit_id` (null for a user not rated in training) and `_exclude`."""

    def __init__(self, model, names: list[str], user: str, item: str, prediction: str,
                 rank: str | None = None) -> None:
        self.model, self.names, self.user, self.item = model, names, user, item
        self.prediction, self.rank = prediction, rank

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        me = self.model.value
        names = self.names + [self.prediction]
        if self.rank:
            names += [self.rank, candidates_column(self.rank)]
        for batch in batches:
            users, items = arrow.ids(batch.column(self.user)), arrow.ids(batch.column(self.item))
            known = ((users >= 0) & (users < me.rated_users.size) & (items >= 0)
                     & (items < me.rated_items.size))
            known[known] &= me.rated_users[users[known]] & me.rated_items[items[known]]
            out = np.full(batch.num_rows, np.nan, np.float32)
            if known.any():
                out[known] = me._state.predict(users[known], items[known])
            arrays = [batch.column(n) for n in self.names] + [pa.array(out)]
            if self.rank:
                arrays += self._ranks(me, batch, users, items)
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    @staticmethod
    def _ranks(me: "MFSGDModel", batch: pa.RecordBatch, users: np.ndarray,
               items: np.ndarray) -> list[pa.Array]:
        s = me._state
        fitted = np.flatnonzero(np.asarray(batch.column("_fit_id").is_valid(), bool))
        distinct, first, inverse = np.unique(users[fitted], return_index=True,
                                             return_inverse=True)
        row_query = np.full(batch.num_rows, -1, np.int64)
        row_query[fitted] = inverse.ravel()
        n_items = s.item_factors_.shape[0]
        exclude = arrow.lists_to_csr(batch.take(pa.array(fitted[first])).column("_exclude"),
                                     n_items)
        # μ + b_u is the same for all of a user's items: the order needs b_i + ⟨w_u, h_i⟩
        return rank_arrays(*candidate_ranks(
            s.user_factors_[distinct], s.item_factors_, s.item_bias_, exclude, row_query,
            items, known=me.rated_items))


ml.declare(_MFSGDParams, SPEC)
ml.keyword_init(MFSGD)
ml.add_accessors(MFSGDModel, ("userCol", "itemCol", "predictionCol", "coldStartStrategy",
                             "rankCol"), setters=True)


def _save(m: MFSGDModel, data) -> None:
    m._state.save(data / "mf_sgd.npz")
    with open(data / "rated.npz", "wb") as f:
        np.savez(f, users=m.rated_users, items=m.rated_items)
    if m.users is not None:  # written by the executors
        m.users.write.mode("overwrite").parquet(data.resolve().as_uri() + "/users")

