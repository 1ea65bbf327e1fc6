"""`FMPair`: FMPair as a pyspark.ml Estimator (its params, shared with `FMPairModel`, are
`models.fmpair.spark_params`); Spark executors train it on the parameter server (the
Glint-FMPair way), and the `FMPairModel` it returns recommends without one.

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
The fitted model, its recommending and scoring (on the executors in Arrow blocks,
`models.fmpair.spark_scoring`) and its persistence are `models.fmpair.spark_model`.
"""

from __future__ import annotations

import logging

import numpy as np
from pyspark.ml import Estimator
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, functions as F

from psframework import PSError
from psframework.spark import Training, ml, pin_local_interpreter
from models.fmpair.local import LocalFMPair
from models.fmpair.spec import SPEC
from models.fmpair.spark_model import FMPairModel
from models.fmpair.spark_params import FMPairParams
from models.fmpair.spark_job import PROGRESS_COLUMNS, EpochLog, EpochsTask, Metadata, positives
from models.memory import ensure_memory
from models.spark_estimator import (
    spark_jobs, start_parameter_server, training,
)

__all__ = ["FMPair"]

log = logging.getLogger("models.fmpair")

class FMPair(Estimator, FMPairParams, DefaultParamsWritable, DefaultParamsReadable):
    """Pairwise factorization machine (the LightFM model) trained on the parameter server
    from Spark executors. Params: see `explainParams()`; docs/fmpair-spark.md."""

    # -- training ------------------------------------------------------------------------
    def _fit(self, dataset: DataFrame) -> FMPairModel:
        self._check()
        self._check_columns(dataset.schema, training=True)
        sc = dataset.sparkSession.sparkContext
        pin_local_interpreter(sc)  # metadata runs Python tasks
        with spark_jobs(sc, "FMPair.fit reading its interactions"):
            dataset = positives(dataset, self)
            meta = Metadata.compute(self, dataset)
        spark = dataset.sparkSession
        every = self._value("checkpointInterval")
        with start_parameter_server(self, spark, every) as ps:
            client = ps.client()
            config = {"n_features": meta.space.n_features,
                      **{h.name: self._value(name) for name, h in SPEC.spark.items()
                         if h.plugin}}
            # a failed fit leaves the model (separate mode) and its checkpoints, and says so
            with training(self, ps, "fmpair", config, "FMPair.fit", every=every,
                          resume_from=self._value("resumeFrom")) as run:
                name = run.name
                history = self._train(spark, dataset, meta, ps.master, name, run)
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
        model.history = history
        return self._copyValues(model)

    def _train(self, spark, dataset: DataFrame, meta: "Metadata", master: str,
               name: str, run: Training) -> list[dict]:
        cols = [F.col(self._value("userCol")).cast("long").alias("user"),
                F.col(self._value("itemCol")).cast("long").alias("item")]
        if self._value("weightCol"):  # a positive's weight in the loss
            cols.append(F.col(self._value("weightCol")).cast("float").alias("weight"))
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
        client = run.ps.client()
        progress = f"{name}-progress"  # the tasks' epoch rows, read live by EpochLog
        client.create_matrix(progress, total, PROGRESS_COLUMNS, "float64", exists_ok=True,
                             replicas=run.replicas)  # survives what the model does
        job.update(master=master, name=name, epochs=total, progress=progress)
        # one Spark job for all epochs, or for each run of checkpointInterval epochs
        every = run.every or total
        try:
            with EpochLog(client, name, progress, total, parts, run.first) as epochs_log:
                for first in range(run.first, total, every):
                    epochs = range(first, min(first + every, total))
                    step = f"FMPair epochs {epochs.start + 1}-{epochs.stop}/{total}"
                    sc.setJobDescription(step)
                    with spark_jobs(sc, step):
                        data.mapInArrow(EpochsTask(job, shared, epochs), "epoch int",
                                        barrier=True).collect()
                    run.epoch_done(epochs.stop - 1)
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


ml.keyword_init(FMPair)
