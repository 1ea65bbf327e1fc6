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

from typing import Iterable

import numpy as np
from pyspark.ml import Estimator
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, functions as F, types as T

from psframework.spark import arrow, ml, pin_local_interpreter
from models.mf_sgd.local import LocalMFSGD
from models.mf_sgd.spark_job import USERS_SCHEMA, EpochLog, Train, id_column, metadata
from models.mf_sgd.spec import SPEC
from models.mf_sgd.worker import pull_item_side, push_item_side
from models.spark_estimator import check_columns, spark_jobs, start_parameter_server, training
from models.spark_recommender import FactorModel

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


class MFSGDModel(FactorModel, _MFSGDParams):
    """A fitted MF-SGD: factors and biases in the driver (broadcast to the scoring tasks),
    so it predicts and recommends without a parameter server, with ALSModel's API
    (`models.spark_recommender.FactorModel`). Only rated users and items are known: the
    others are cold-start (coldStartStrategy) and never recommended. `history`: per
    epoch of fit, epoch, train_rmse, valid_rmse (None without a
    validationIndicatorCol), seconds, updates."""

    LOCAL, STATE_FILE = LocalMFSGD, "mf_sgd.npz"


ml.declare(_MFSGDParams, SPEC)
ml.keyword_init(MFSGD)
ml.add_accessors(MFSGDModel, ("userCol", "itemCol", "predictionCol", "coldStartStrategy",
                             "rankCol"), setters=True)

