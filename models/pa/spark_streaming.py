"""`StreamingPassiveAggressive`: learn continuously from a Spark Structured Streaming
DataFrame on a model that lives on the parameter server, and score with its current
weights meanwhile.

    stream = StreamingPassiveAggressive(spark, classes=[0.0, 1.0], hashBits=18)
    query = stream.start(messages)                  # writeStream.foreachBatch(...).start()
    stream.transform(other).writeStream...          # live scores: the weights of now
    stream.model().transform(batch_df)              # or a snapshot, without a server
    stream.stop()

Every micro-batch runs one Spark job whose tasks learn their partitions against the
server (mini-batches of batchSize, as `PassiveAggressive.fit` does); the driver adds up
the tasks' progressive validation (each example is predicted just before it is learned
from) and logs it, keeps it in `history`, and passes it to `callback`.

Restarts. Spark's foreachBatch is at-least-once: after a failure the last micro-batch
may be delivered again. The model remembers the last micro-batch it learned (its
`batches` table), so a replayed one is skipped when the query restarts from its
checkpointLocation against the same model: name it (`modelName`) on a separate cluster
(`parameterServerHost`), where it outlives `stop()`. Or save `stream.model()` and start
a new stream from it with `initialModel`.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable

import numpy as np
from pyspark.sql import DataFrame, functions as F
from pyspark.sql.streaming import StreamingQuery

from psframework import ConfigError
from psframework.spark import SparkParameterServer, pin_local_interpreter
from models.pa.data import Classes
from models.pa.estimator import PAParams, PassiveAggressiveModel, score, vector_width
from models.pa.spark_job import LEARN_SCHEMA, Layout, Learn, features_kind
from models.spark_estimator import spark_jobs

__all__ = ["StreamingPassiveAggressive"]

log = logging.getLogger("models.pa")


class StreamingPassiveAggressive(PAParams):
    """classes: every label the stream will hold. params: PassiveAggressive's (featuresCol,
    labelCol, variant, C, hashBits, fitIntercept, batchSize, numParameterServers,
    parameterServerHost, replicas, ...; maxIter does not apply). modelName: the model's name on
    the server (default: fresh, destroyed by stop()). initialModel: a fitted or saved
    PassiveAggressiveModel to continue from. callback(entry) after every micro-batch."""

    def __init__(self, spark: Any, classes, *, modelName: str | None = None,
                 initialModel: PassiveAggressiveModel | None = None,
                 callback: Callable[[dict], Any] | None = None, **params: Any) -> None:
        super().__init__()
        for key, value in params.items():
            if not self.hasParam(key):
                raise ConfigError(f"StreamingPassiveAggressive has no param {key!r}")
            self._set(**{key: value})
        if initialModel is not None:
            self._set(hashBits=initialModel._value("hashBits"),
                      fitIntercept=initialModel._value("fitIntercept"))
        self._check()
        self.spark, self.classes = spark, Classes.of(classes)
        self.modelName, self.initialModel, self.callback = modelName, initialModel, callback
        if initialModel is not None and initialModel.classes != self.classes.to_wire():
            raise ConfigError(f"initialModel has classes {initialModel.classes}, not "
                              f"{self.classes.to_wire()}")
        self.history: list[dict] = []
        self.skipped: list[int] = []  # ids of micro-batches delivered again and not learned
        self.query: StreamingQuery | None = None
        self._ps: SparkParameterServer | None = None
        self._name = modelName or f"pa-stream-{uuid.uuid4().hex[:12]}"
        self._layout: Layout | None = None
        self._seen = self._wrong = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, stream: DataFrame, trigger: dict | None = None,
              **options: Any) -> StreamingQuery:
        """Start learning from `stream`; `trigger`: DataStreamWriter.trigger's keywords
        (e.g. {"processingTime": "5 seconds"} or {"availableNow": True}); `options`:
        writeStream options such as checkpointLocation. Returns the running query."""
        if self.query is not None:
            raise ConfigError("this StreamingPassiveAggressive is already running a query")
        self._check_label(stream.schema)
        features_kind(stream.schema, self._value("featuresCol"))
        pin_local_interpreter(self.spark.sparkContext)
        host = self._value("parameterServerHost")
        self._ps = SparkParameterServer(self.spark, None if host else
                                        self._value("numParameterServers"), host=host).start()
        try:
            writer = stream.writeStream.foreachBatch(self._learn_batch)
            if trigger:
                writer = writer.trigger(**trigger)
            self.query = writer.options(**options).start()
        except BaseException:
            self.stop()
            raise
        return self.query

    def stop(self) -> None:
        """Stop the query, then leave the server: the model is destroyed there unless it
        is named on a separate cluster (call model() first to keep its weights)."""
        try:
            if self.query is not None:
                self.query.stop()
        finally:
            self.query = None
            if self._ps is not None:
                try:
                    if self._layout is not None and not (self.modelName
                                                          and self._value("parameterServerHost")):
                        self._ps.client().destroy(self._name)
                finally:
                    self._ps.close()
                    self._ps, self._layout = None, None

    def __enter__(self) -> "StreamingPassiveAggressive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- learning ------------------------------------------------------------------------
    def _create(self, df: DataFrame) -> bool:
        """The model on the server, on the first micro-batch with rows (a Vector
        column's size is read from it); False while there is nothing to size it by."""
        features = self._value("featuresCol")
        width = (self.initialModel._layout.width if self.initialModel is not None
                 else vector_width(df, features))
        if width is None and features_kind(df.schema, features) == "vector":
            return False
        layout = Layout.of(df.schema, features, self._value("hashBits"), width,
                           self.classes.to_wire(), self._value("labelCol"))
        client = self._server().client()
        info = client.create_model(self._name, "pa", {
            "n_features": layout.n_features, "n_weights": self.classes.n_weights,
            "classes": self.classes.to_wire(), "stream": True},
            exists_ok=self.modelName is not None and self.initialModel is None,
            replicas=self._value("replicas"))
        if info.config["classes"] != self.classes.to_wire() or (
                info.config["n_features"] != layout.n_features):
            raise ConfigError(f"model {self._name!r} on the server has classes "
                              f"{info.config['classes']} and {info.config['n_features']} "
                              f"features; this stream has {self.classes.to_wire()} and "
                              f"{layout.n_features}")
        if self.initialModel is not None:
            client.push_rows(self._name, "weights", np.arange(layout.n_features + 1),
                             self.initialModel._local.weights_)
        self._layout = layout
        return True

    def _learn_batch(self, df: DataFrame, batch_id: int) -> None:
        if self._layout is None and not self._create(df):
            return
        ps, layout = self._live()
        client = ps.client()
        if batch_id < client.pull_rows(self._name, "batches", [0])[0]:
            log.info("PA stream: micro-batch %d was learned before; skipped", batch_id)
            self.skipped.append(batch_id)
            return
        began = time.perf_counter()
        job = self._job(ps.master, self._name, layout, 1, False, df,
                        df.rdd.getNumPartitions())
        label = self._value("labelCol")
        with spark_jobs(df.sparkSession.sparkContext, f"learning micro-batch {batch_id}"):
            rows = df.select(self._value("featuresCol"), F.col(label).cast("double").alias(label)) \
                     .mapInArrow(Learn(job), LEARN_SCHEMA).collect()
        client.push_rows(self._name, "batches", [0], [batch_id + 1.0])
        n, wrong = sum(r.examples for r in rows), sum(r.mistakes for r in rows)
        if n == 0:
            return
        seconds = time.perf_counter() - began
        self._seen, self._wrong = self._seen + n, self._wrong + wrong
        entry = {"batch_id": batch_id, "examples": n, "accuracy": 1 - wrong / n,
                 "progressive_accuracy": 1 - self._wrong / self._seen, "seconds": seconds,
                 "examples_per_s": n / max(seconds, 1e-9)}
        self.history.append(entry)
        log.info("PA stream micro-batch %d: %d examples, accuracy %.4f, progressive %.4f, "
                 "%.0f examples/s", batch_id, n, entry["accuracy"],
                 entry["progressive_accuracy"], entry["examples_per_s"])
        if self.callback is not None:
            self.callback(entry)

    # -- scoring -------------------------------------------------------------------------
    def _server(self) -> SparkParameterServer:
        if self._ps is None:
            raise ConfigError("the stream has no parameter server: start() it first")
        return self._ps

    def _live(self) -> tuple[SparkParameterServer, Layout]:
        if self._ps is None or self._layout is None:
            raise ConfigError("the stream has no model on the server yet: start() it and "
                              "wait for a first micro-batch with rows")
        return self._ps, self._layout

    def transform(self, dataset: DataFrame) -> DataFrame:
        """dataset with rawPredictionCol and predictionCol by the weights on the server
        when each batch is scored (a streaming dataset: every micro-batch sees the
        weights of its time)."""
        ps, layout = self._live()
        return score(self, dataset, layout, master=ps.master, name=self._name)

    def model(self) -> PassiveAggressiveModel:
        """A snapshot of the current weights as a PassiveAggressiveModel (to save, or to
        score without the server)."""
        ps, layout = self._live()
        weights = ps.client().pull_rows(self._name, "weights",
                                              np.arange(layout.n_features + 1))
        model = PassiveAggressiveModel(self._state(layout, weights), layout)
        model.history = list(self.history)
        return self._copyValues(model)
