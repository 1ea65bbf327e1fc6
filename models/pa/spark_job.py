"""The Spark side of passive-aggressive: how a task reads examples from Arrow batches, the
task that learns (a fit's epochs, a stream's micro-batch) and the one that scores.

- `Layout`: where the features and labels are and how to read them: a pyspark.ml Vector
  column (its indices are the feature indices; the table has 2^⌈log2 size⌉ rows) or an
  array<string> column hashed into 2^hashBits buckets (`hashing.hash_arrow`).
- `Learn`: each task reads its partition, then learns it in mini-batches for `epochs`
  epochs against the weights on the server (`worker.Learner`); with a `progress` table
  it adds (1, mistakes, examples, seconds) to the epoch's row, which the driver polls.
  It returns its (epoch, mistakes, examples): the progressive validation counts.
- `Score`: margins and predictions, with weights held by the model (broadcast) or pulled
  from the server at scoring time (a live model), for `transform`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark.sql import types as T

from psframework import ConfigError
from psframework.spark import arrow, executor_client
from models.pa.data import Classes
from models.pa.hashing import hash_arrow
from models.pa.kernels import margins
from models.pa.worker import Learner, pull_margins

__all__ = ["Layout", "Learn", "Score", "LEARN_SCHEMA", "features_kind", "vector_bits"]

LEARN_SCHEMA = "epoch int, mistakes long, examples long"


def features_kind(schema: T.StructType, features: str) -> str:
    """"vector" or "strings": what the features column holds; a ConfigError if it is
    missing or of another type."""
    from pyspark.ml.linalg import VectorUDT
    fields = {f.name: f.dataType for f in schema.fields}
    if features not in fields:
        raise ConfigError(f"featuresCol {features!r} is not in the DataFrame (it has "
                          f"{sorted(fields)})")
    kind = fields[features]
    if isinstance(kind, VectorUDT):
        return "vector"
    if isinstance(kind, T.ArrayType) and isinstance(kind.elementType, T.StringType):
        return "strings"
    raise ConfigError(f"featuresCol {features!r} must be a Vector (as VectorAssembler or "
                      f"HashingTF make) or an array<string> of raw features to hash, not "
                      f"{kind.simpleString()}")


def vector_bits(size: int) -> int:
    """hash_bits of the table that holds vectors of `size`: 2^bits >= size."""
    return max(int(size - 1).bit_length(), 1)


@dataclass(frozen=True)
class Layout:
    """features: the column; kind: "vector" or "strings"; hash_bits: the table has
    2^hash_bits feature rows; width: the vectors' size; label: the label column (None
    when scoring); classes: the sorted labels."""

    features: str
    kind: str
    hash_bits: int
    width: int
    classes: tuple
    label: str | None = None

    @classmethod
    def of(cls, schema: T.StructType, features: str, hash_bits: int, width: int | None,
           classes, label: str | None = None) -> "Layout":
        """The layout of `features` (`features_kind`); for a Vector, `width` is its size."""
        if features_kind(schema, features) == "vector":
            if not width:
                raise ConfigError(f"featuresCol {features!r}: the vectors' size is unknown")
            return cls(features, "vector", vector_bits(width), width, tuple(classes), label)
        return cls(features, "strings", hash_bits, 1 << hash_bits, tuple(classes), label)

    @property
    def n_features(self) -> int:
        return 1 << self.hash_bits

    def features_csr(self, batch: pa.RecordBatch) -> sp.csr_matrix:
        column = batch.column(self.features)
        if self.kind == "strings":
            return hash_arrow(column, self.hash_bits)
        X = arrow.vectors_to_csr(column, self.width, what=f"a vector in {self.features!r}")
        return sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], self.n_features))

    def labels(self, batch: pa.RecordBatch) -> np.ndarray:
        column = batch.column(self.label)
        if column.null_count:
            raise ConfigError(f"labelCol {self.label!r} holds nulls; every example needs a "
                              "label")
        values = column.to_numpy(zero_copy_only=False)
        return Classes(np.asarray(self.classes)).indices(
            values, values.size, f"a stream's classes (StreamingPassiveAggressive's classes=) "
            f"must hold every label in {self.label!r}")


def _read(batches: Iterable[pa.RecordBatch], layout: Layout
          ) -> tuple[sp.csr_matrix, np.ndarray]:
    """A partition's examples, in order, as one CSR and its labels."""
    parts = [(layout.features_csr(b), layout.labels(b)) for b in batches if b.num_rows]
    if not parts:
        return sp.csr_matrix((0, layout.n_features), dtype=np.float32), np.zeros(0, np.int64)
    return sp.vstack([p[0] for p in parts], format="csr"), np.concatenate([p[1] for p in parts])


class Learn:
    """The learning task. job: master, name, layout, variant, C, fitIntercept,
    batchSize, epochs, scale (of the deltas, `worker.delta_scale`), progress (report to
    the model's `progress` table)."""

    def __init__(self, job: dict) -> None:
        self.job = job

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        job = self.job
        X, labels = _read(batches, job["layout"])
        client = executor_client(job["master"])
        learner = Learner(client.aio, job["name"], job["layout"].n_features,
                          variant=job["variant"], C=job["C"], fit_intercept=job["fitIntercept"])
        done = []
        for epoch in range(job["epochs"]):
            began = time.perf_counter()
            mistakes = client.run(learner.learn(X, labels, job["batchSize"],
                                                scale=job["scale"]))
            if job["progress"]:
                client.push_rows(job["name"], "progress", [epoch], np.array(
                    [[1, mistakes, X.shape[0], time.perf_counter() - began]]))
            done.append((epoch, mistakes, X.shape[0]))
        yield pa.RecordBatch.from_arrays(
            [pa.array([d[i] for d in done], t) for i, t in enumerate(
                (pa.int32(), pa.int64(), pa.int64()))], names=["epoch", "mistakes", "examples"])


class Score:
    """The scoring task: the input columns plus raw (array<double> of margins: [-m, m]
    for binary labels, as LinearSVC's rawPrediction; one per class otherwise) and the
    predicted class. Weights: `weights` (a broadcast of the (features + 1) × n_weights
    array) or, when it is None, the live model `name` on the server at `master`."""

    def __init__(self, layout: Layout, names: list[str], raw: str, prediction: str,
                 fit_intercept: bool, weights=None, master: str | None = None,
                 name: str | None = None) -> None:
        self.layout, self.names, self.raw, self.prediction = layout, names, raw, prediction
        self.fit_intercept, self.weights, self.master, self.name = (fit_intercept, weights,
                                                                   master, name)

    def _margins(self, X: sp.csr_matrix) -> np.ndarray:
        if self.weights is not None:
            return margins(X.indptr, X.indices, X.data, self.weights.value, self.fit_intercept)
        if self.master is None or self.name is None:
            raise ConfigError("Score needs the weights, or the master and name of a live model")
        client = executor_client(self.master)
        return client.run(pull_margins(client.aio, self.name, self.layout.n_features, X,
                                       self.fit_intercept))

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        classes = np.asarray(self.layout.classes, np.float64)
        for batch in batches:
            m = self._margins(self.layout.features_csr(batch))
            if m.shape[1] == 1:
                raw, predicted = np.column_stack([-m[:, 0], m[:, 0]]), classes[(m[:, 0] > 0) * 1]
            else:
                raw, predicted = m, classes[m.argmax(axis=1)]
            lists = pa.ListArray.from_arrays(
                pa.array(np.arange(0, raw.size + 1, raw.shape[1], dtype=np.int32)),
                pa.array(raw.ravel()))
            yield pa.RecordBatch.from_arrays(
                [batch.column(n) for n in self.names] + [lists, pa.array(predicted)],
                names=self.names + [self.raw, self.prediction])
