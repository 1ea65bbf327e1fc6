"""`PassiveAggressive`: online passive-aggressive classification as a pyspark.ml
Estimator; Spark executors learn on the parameter server, and `PassiveAggressiveModel`
scores without one.

    from models.pa import PassiveAggressive
    model = PassiveAggressive(variant="pa1", C=1.0, maxIter=5).fit(df)  # features, label
    model.transform(test)        # rawPrediction and prediction, for pyspark.ml evaluators

`fit` checks the params and columns, reads the classes (the distinct labels) and the
vectors' size, starts a `SparkParameterServer` (or uses the one at parameterServerHost)
and runs ONE Spark job over the DataFrame's partitions as they are: each task reads its
partition and learns it `maxIter` times in mini-batches of batchSize (one pull of the
batch's active weights, the sequential PA over its examples, one push of the deltas), the
tasks learning at once. The driver logs each epoch's progressive accuracy and examples/s
while the job runs; the weights are then pulled into the model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
from pyspark.ml import Estimator, Model
from pyspark.ml.functions import array_to_vector
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.ml.util import (
    DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLReader, MLWritable, MLWriter,
)
from pyspark.sql import DataFrame, functions as F, types as T

from psframework import ConfigError
from psframework.spark import TableProgress, ml, pin_local_interpreter
from models.pa.data import Classes
from models.pa.local import LocalPA
from models.pa.spark_job import LEARN_SCHEMA, Layout, Learn, Score, features_kind
from models.pa.spec import SPEC
from models.pa.worker import delta_scale
from models.spark_estimator import (
    check_columns, held, model_reader, model_writer, spark_jobs, start_parameter_server,
    training,
)

__all__ = ["PassiveAggressive", "PassiveAggressiveModel"]

log = logging.getLogger("models.pa")


class PAParams(ml.ParamValues):
    """The params of the estimator, its model and the streaming trainer: from
    `models.pa.spec.SPEC`."""

    def _check(self) -> None:
        self._check_spec()

    def _check_label(self, schema: T.StructType) -> str:
        check_columns(self, schema, {"labelCol": "number"}, "PassiveAggressive")
        return self._value("labelCol")

    def _job(self, master: str, name: str, layout: Layout, epochs: int, progress: bool,
             data: DataFrame, tasks: int) -> dict:
        """What the `Learn` tasks over the `tasks` partitions of `data` need (they learn at
        once, as many as Spark runs together)."""
        together = min(tasks, max(data.sparkSession.sparkContext.defaultParallelism, 1))
        return {"master": master, "name": name, "layout": layout, "epochs": epochs,
                "progress": progress, "scale": delta_scale(self._value("mixing"), together),
                **{k: self._value(k) for k in ("variant", "C", "fitIntercept", "batchSize")}}

    def _state(self, layout: Layout, weights: np.ndarray) -> LocalPA:
        return LocalPA.from_weights(weights, layout.classes, variant=self._value("variant"),
                                    C=self._value("C"), hash_bits=layout.hash_bits,
                                    fit_intercept=self._value("fitIntercept"),
                                    batch_size=self._value("batchSize"),
                                    mixing=self._value("mixing"))


def vector_width(df: DataFrame, column: str) -> int | None:
    """The size of the first vector in `column` (None if it is not a Vector column or
    holds none)."""
    from pyspark.ml.linalg import VectorUDT
    if not isinstance(df.schema[column].dataType, VectorUDT):
        return None
    row = df.select(column).where(F.col(column).isNotNull()).first()
    return None if row is None else row[0].size


class PassiveAggressive(Estimator, PAParams, DefaultParamsWritable, DefaultParamsReadable):
    """Online passive-aggressive classification on the parameter server (docs/pa.md)."""

    def _fit(self, dataset: DataFrame) -> "PassiveAggressiveModel":
        self._check()
        label, features = self._check_label(dataset.schema), self._value("featuresCol")
        features_kind(dataset.schema, features)
        sc = dataset.sparkSession.sparkContext
        pin_local_interpreter(sc)
        with spark_jobs(sc, "PassiveAggressive.fit reading its labels"):
            found = dataset.select(F.col(label).cast("double").alias("y")).distinct().toArrow()
        values = found.column("y").to_numpy(zero_copy_only=False)
        if found.column("y").null_count or np.isnan(values).any():
            raise ConfigError(f"labelCol {label!r} holds nulls or NaN; every example needs "
                              "a label")
        classes = Classes.of(values)
        layout = Layout.of(dataset.schema, features, self._value("hashBits"),
                           vector_width(dataset, features), classes.to_wire(), label)
        data = dataset.select(features, F.col(label).cast("double").alias(label))
        tasks = data.rdd.getNumPartitions()
        epochs = self._value("maxIter")

        def on_epoch(epoch: int, row: np.ndarray) -> dict:
            _, mistakes, n, seconds = row
            entry = {"epoch": epoch, "accuracy": float(1 - mistakes / max(n, 1)),
                     "examples": int(n), "seconds": float(seconds) / tasks,
                     "examples_per_s": float(n / max(seconds / tasks, 1e-9))}
            log.info("PA epoch %d/%d: progressive accuracy %.4f, %.0f examples/s",
                     epoch + 1, epochs, entry["accuracy"], entry["examples_per_s"])
            return entry
        with start_parameter_server(self, dataset.sparkSession) as ps:
            client = ps.client()
            config = {"n_features": layout.n_features, "n_weights": classes.n_weights,
                      "classes": classes.to_wire(), "epochs": epochs}
            # a failed fit leaves the model (separate mode), and says so
            with training(self, ps, "pa", config, "PassiveAggressive.fit") as run:
                name = run.name
                with TableProgress(client, name, "progress", epochs, tasks, on_epoch,
                                   logger=log, report_as=name) as progress:
                    data.mapInArrow(Learn(self._job(ps.master, name, layout, epochs, True,
                                                    data, tasks)), LEARN_SCHEMA).collect()
                weights = client.pull_rows(name, "weights", np.arange(layout.n_features + 1))
            client.destroy(name)  # the fitted model needs no server: nothing stays on it
        model = PassiveAggressiveModel(self._state(layout, weights), layout)
        model.history = progress.history
        return self._copyValues(model)


class PassiveAggressiveModel(Model, PAParams, MLWritable, MLReadable):
    """Fitted weights in the driver (broadcast to the scoring tasks): transform adds
    rawPredictionCol and predictionCol without a parameter server."""

    def __init__(self, state: LocalPA | None = None, layout: Layout | None = None) -> None:
        super().__init__()
        self.state, self.layout = state, layout
        self.history: list[dict] = []  # per epoch of fit: accuracy (progressive), ...

    @property
    def _local(self) -> LocalPA:
        return held(self.state, self, "weights")

    @property
    def _layout(self) -> Layout:
        return held(self.layout, self, "layout")

    @property
    def classes(self) -> list:
        return list(self._layout.classes)

    @property
    def numClasses(self) -> int:
        return len(self._layout.classes)

    @property
    def numFeatures(self) -> int:
        return self._layout.width

    @property
    def coefficients(self) -> DenseVector:
        """Binary labels: the weight vector (as LinearSVC's)."""
        if self.numClasses != 2:
            raise ConfigError("coefficients is for binary labels; use coefficientMatrix")
        return DenseVector(self._local.coef_[0, :self.numFeatures].astype(np.float64))

    @property
    def coefficientMatrix(self) -> DenseMatrix:
        """One row per weight vector (1 for binary labels, else one per class)."""
        coef = self._local.coef_[:, :self.numFeatures].astype(np.float64)
        return DenseMatrix(coef.shape[0], coef.shape[1], coef.ravel(order="F").tolist())

    @property
    def intercept(self) -> float:
        return float(self._local.intercept_[0])

    @property
    def interceptVector(self) -> DenseVector:
        return DenseVector(self._local.intercept_.astype(np.float64))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        spark = dataset.sparkSession
        pin_local_interpreter(spark.sparkContext)
        weights = spark.sparkContext.broadcast(self._local.weights_)
        return score(self, dataset, self._layout, weights=weights)

    def write(self) -> MLWriter:
        layout = {**dataclasses.asdict(self._layout), "classes": list(self._layout.classes)}
        return model_writer(self, lambda m, data: m._local.save(data / "pa.npz"),
                            layout=layout)

    @classmethod
    def read(cls) -> MLReader:
        def build(meta: dict, data, reader) -> "PassiveAggressiveModel":
            layout = meta["layout"]
            return cls(LocalPA.load(data / "pa.npz"),
                       Layout(**{**layout, "classes": tuple(layout["classes"])}))
        return model_reader(cls, build)


def score(params: PAParams, dataset: DataFrame, layout: Layout, **weights: Any) -> DataFrame:
    """dataset with rawPredictionCol (a Vector) and predictionCol added by `Score`
    (weights: a broadcast `weights=`, or `master=` and `name=` of a live model)."""
    features_kind(dataset.schema, layout.features)
    names = dataset.columns
    raw, prediction = params._value("rawPredictionCol"), params._value("predictionCol")
    schema = T.StructType(dataset.schema.fields + [
        T.StructField(raw, T.ArrayType(T.DoubleType())), T.StructField(prediction,
                                                                        T.DoubleType())])
    out = dataset.mapInArrow(Score(layout, names, raw, prediction,
                                   params._value("fitIntercept"), **weights), schema)
    return out.withColumn(raw, array_to_vector(raw))


ml.declare(PAParams, SPEC)
ml.keyword_init(PassiveAggressive)
ml.add_accessors(PassiveAggressiveModel, ("featuresCol", "predictionCol", "rawPredictionCol"),
                 setters=True)
