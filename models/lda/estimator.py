"""`LDA`: latent Dirichlet allocation as a pyspark.ml Estimator with
pyspark.ml.clustering.LDA's names; Spark executors sample it on the parameter server
(collapsed Gibbs, Metropolis-Hastings with alias tables), and `LDAModel` folds documents
in, scores and describes its topics without one.

    from models.lda import LDA
    counts = CountVectorizer(inputCol="words", outputCol="features").fit(df).transform(df)
    model = LDA(k=20, maxIter=100).fit(counts)
    model.describeTopics(10)                     # topic, termIndices, termWeights
    model.transform(counts)                      # + topicDistribution, as MLlib's

`fit` checks the params and the column, materializes the documents where they are
(`localCheckpoint`: their partitions and order kept, and whatever came before, such as
a coalesce, kept out of the barrier stage), reads the vocabulary (the vectors' size) and
checks the counts in one pass over them (`models.lda.spark_job.survey`), starts a
`SparkParameterServer` (or uses the one at `parameterServerHost`), creates the word-topic
counts there and runs ONE barrier-mode Spark job over the documents' partitions as they
are (repartitioned only when there are more of them than task slots): each task is a
`models.lda.worker.Worker` for the whole fit, its documents and their topics staying in
it, the tasks meeting through the server between iterations. The driver logs every
iteration's collapsed log-likelihood (and training perplexity) while the job runs, then
pulls the counts (vocabulary × k int32) into the model.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.ml import Estimator, Model
from pyspark.ml.functions import array_to_vector
from pyspark.ml.linalg import DenseMatrix, DenseVector, VectorUDT
from pyspark.ml.util import (
    DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLReader, MLWritable, MLWriter,
)
from pyspark.sql import DataFrame, functions as F, types as T

from psframework import Client, ConfigError
from psframework.spark import ml, pin_local_interpreter
from models.lda.local import LocalLDA
from models.lda.plugin import WORD_TOPIC
from models.lda.spark_job import TRAIN_SCHEMA, IterationLog, Train, read_counts, survey
from models.lda.spec import SPEC
from models.memory import ensure_memory
from models.spark_estimator import (
    held, model_reader, model_writer, need_count, spark_jobs, start_parameter_server, training,
)

__all__ = ["LDA", "LDAModel"]


class _LDAParams(ml.ParamValues):
    """The params of LDA and LDAModel: from `models.lda.spec.SPEC` (pyspark.ml.clustering
    LDA's names where it has them)."""

    def _features(self, schema: T.StructType, who: str) -> str:
        """featuresCol, if it names a column of Vectors; a ConfigError saying what to pass
        otherwise."""
        column = self._value("featuresCol")
        fields = {f.name: f.dataType for f in schema.fields}
        if column not in fields:
            raise ConfigError(f"{who} param featuresCol: column {column!r} is not in the "
                              f"DataFrame (it has {sorted(fields)})")
        if not isinstance(fields[column], VectorUDT):
            raise ConfigError(f"{who} param featuresCol: column {column!r} must hold each "
                              "document's word counts as a Vector, as CountVectorizer makes "
                              f"them (from Tokenizer's words), not "
                              f"{fields[column].simpleString()}")
        return column

    def _local_params(self) -> dict:
        """The local API's hyper-parameters with this estimator's values."""
        return {h.name: self._value(name) for name, h in SPEC.spark.items() if h.local}


class LDA(Estimator, _LDAParams, DefaultParamsWritable, DefaultParamsReadable):
    """Latent Dirichlet allocation by collapsed Gibbs sampling on the parameter server
    (docs/lda.md). Params: see `explainParams()`."""

    def _fit(self, dataset: DataFrame) -> "LDAModel":
        self._check_spec()
        column = self._features(dataset.schema, "LDA")
        spark = dataset.sparkSession
        sc = spark.sparkContext
        pin_local_interpreter(sc)
        with spark_jobs(sc, "LDA.fit reading its documents"):
            # materialized where they are, in their partitions and order: the lineage
            # before (a coalesce, a union) cannot break the barrier stage's rules, and
            # the documents are read once
            data = dataset.select(F.col(column).alias("features")).localCheckpoint()
            corpus = survey(data, column)
        slots = max(sc.defaultParallelism, 1)
        # a barrier stage needs a task slot per partition; fewer partitions keep theirs
        docs = data.repartition(slots) if corpus.partitions > slots else data
        V, k, iterations = corpus.vocabulary, self._value("k"), self._value("maxIter")
        with start_parameter_server(self, spark) as ps:
            client = ps.client()
            config = {"vocabulary": V, "k": k, "beta": self._value("topicConcentration"),
                      "iterations": iterations}
            with training(self, ps, "lda", config, "LDA.fit") as run:  # a failed fit
                name = run.name  # leaves the model (separate mode), and says so
                history = _train(docs, client, self._job(ps.master, name, V))
                ensure_memory(V * k * 4 * 2, f"LDA.fit pulling the {V:,} × {k} word-topic "
                              "counts to the driver",
                              "give the driver more memory (spark.driver.memory)")
                word_topic = client.pull_rows(name, WORD_TOPIC, np.arange(V))
            client.destroy(name)  # the fitted model needs no server: nothing stays on it
        state = LocalLDA.from_counts(word_topic, **self._local_params(), show_progress=False)
        state.history_ = history
        model = LDAModel(state)
        model.history = history
        return self._copyValues(model)

    def _job(self, master: str, name: str, V: int) -> dict:
        """What the `Train` tasks need."""
        return {"master": master, "name": name, "vocabulary": V, "k": self._value("k"),
                "alpha": self._value("docConcentration"),
                "beta": self._value("topicConcentration"), "iterations": self._value("maxIter"),
                "mh_steps": self._value("mhSteps"), "sampler": self._value("sampler"),
                "evaluate_every": self._value("evaluateEvery"), "seed": self._value("seed")}


def _train(docs: DataFrame, client: Client, job: dict) -> list[dict]:
    """The barrier job of `Train` tasks over `docs`, its iterations logged as they end;
    the fit's history."""
    sc = docs.sparkSession.sparkContext
    step = f"LDA.fit: {job['iterations']} iterations, k={job['k']}"
    try:
        sc.setJobDescription(step)
        with IterationLog(client, job["name"], job["iterations"],
                          job["evaluate_every"]) as progress:
            with spark_jobs(sc, step):
                docs.mapInArrow(Train(job), TRAIN_SCHEMA, barrier=True).collect()
        return progress.history
    finally:
        sc.setJobDescription(None)  # type: ignore[arg-type]  # None clears it


class LDAModel(Model, _LDAParams, MLWritable, MLReadable):
    """A fitted LDA: the word-topic counts in the driver (broadcast to the tasks that fold
    documents in), so it describes, transforms and scores without a parameter server.
    As MLlib's LocalLDAModel: `isDistributed()` is False."""

    def __init__(self, state: LocalLDA | None = None) -> None:
        super().__init__()
        self.state = state
        # per iteration of fit: iteration, log_likelihood (collapsed, of the training
        # topics), perplexity (training, every evaluateEvery iterations; else None),
        # seconds, tokens_per_s
        self.history: list[dict] = []

    @property
    def _state(self) -> LocalLDA:
        return held(self.state, self, "topics")

    def vocabSize(self) -> int:
        """The vocabulary's size: the count vectors' size."""
        return int(self._state.vocabulary_size)

    def isDistributed(self) -> bool:
        """False: the topics live in the driver, as MLlib's LocalLDAModel's."""
        return False

    def estimatedDocConcentration(self) -> DenseVector:
        """The documents' Dirichlet prior, one value per topic (docConcentration: fit
        does not re-estimate it)."""
        s = self._state
        return DenseVector(np.full(s.k, float(s.alpha)))

    def topicsMatrix(self) -> DenseMatrix:
        """vocabSize × k: column j is topic j's distribution over the words,
        (n_wj + β) / (n_j + Vβ), as MLlib's (local) topicsMatrix."""
        phi = self._state.topic_word_  # k × V, row-major: column-major V × k
        return DenseMatrix(phi.shape[1], phi.shape[0], np.ascontiguousarray(phi).ravel())

    def describeTopics(self, maxTermsPerTopic: int = 10) -> DataFrame:
        """(topic int, termIndices array<int>, termWeights array<double>): each topic's
        `maxTermsPerTopic` most probable words, most probable first, as MLlib's."""
        from pyspark.sql import SparkSession
        n = need_count(maxTermsPerTopic, "maxTermsPerTopic")
        phi = self._state.topic_word_
        top = np.argsort(-phi, axis=1, kind="stable")[:, :n]
        weights = np.take_along_axis(phi, top, axis=1)
        k, m = top.shape
        offsets = pa.array(np.arange(k + 1, dtype=np.int32) * m)

        def lists(values: np.ndarray) -> pa.ListArray:
            return pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))
        return SparkSession.active().createDataFrame(pa.table({
            "topic": pa.array(np.arange(k, dtype=np.int32)),
            "termIndices": lists(top.astype(np.int32)), "termWeights": lists(weights)}))

    def _shipped(self, spark):
        """The counts (int32, the smallest form of the topics) and hyper-parameters, for
        this model's Python tasks."""
        pin_local_interpreter(spark.sparkContext)
        s = self._state
        return spark.sparkContext.broadcast((s.word_topic_counts_, s.get_params()))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        column = self._features(dataset.schema, "LDAModel")
        out = self._value("topicDistributionCol")
        names = dataset.columns
        schema = T.StructType([f for f in dataset.schema.fields if f.name != out]
                              + [T.StructField(out, T.ArrayType(T.DoubleType()))])
        kept = [n for n in names if n != out]
        folded = dataset.mapInArrow(_FoldIn(self._shipped(dataset.sparkSession), kept,
                                            column, out), schema)
        theta = F.col(out)  # array_to_vector fails on a null array: a null vector stays null
        return folded.withColumn(out, F.when(theta.isNotNull(), array_to_vector(theta)))

    def logLikelihood(self, dataset: DataFrame) -> float:
        """Σ over the documents of Σ_w n_dw log Σ_k θ_dk φ_kw, θ_d folded in on the whole
        document with the topics fixed (`models.lda.evaluate`): computed on the
        executors, one number to the driver."""
        return self._score(dataset)[0]

    def logPerplexity(self, dataset: DataFrame) -> float:
        """-logLikelihood(dataset) / the documents' tokens (lower is better);
        exp(logPerplexity) is the perplexity."""
        ll, n = self._score(dataset)
        if n == 0:
            raise ConfigError("LDAModel.logPerplexity: the documents hold no tokens")
        return -ll / n

    def _score(self, dataset: DataFrame) -> tuple[float, int]:
        column = self._features(dataset.schema, "LDAModel")
        task = _Score(self._shipped(dataset.sparkSession))
        row = (dataset.select(F.col(column).alias("features"))
               .mapInArrow(task, "log_likelihood double, tokens long")
               .agg(F.sum("log_likelihood").alias("ll"), F.sum("tokens").alias("n")).first())
        assert row is not None  # an aggregation has one row
        return (float(row.ll) if row.ll is not None else 0.0), int(row.n or 0)

    def write(self) -> MLWriter:
        return model_writer(self, lambda m, data: m._state.save(data / "lda.npz"))

    @classmethod
    def read(cls) -> MLReader:
        return model_reader(cls, lambda meta, data, reader: cls(LocalLDA.load(data / "lda.npz")))


def _local(shipped) -> LocalLDA:
    word_topic, params = shipped.value
    return LocalLDA.from_counts(word_topic, **params)


class _FoldIn:
    """mapInArrow: rows to the same rows with each document's topic distribution
    (`LocalLDA.transform`: `evaluate.fold_in`, deterministic, so a document gets the same
    θ in any batch) as array<double>; null for a null vector."""

    def __init__(self, shipped, names: list[str], column: str, out: str) -> None:
        self.shipped, self.names, self.column, self.out = shipped, names, column, out

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = _local(self.shipped)
        V, k = model.vocabulary_size, model.k
        for batch in batches:
            vectors = batch.column(self.column)
            present = np.asarray(vectors.is_valid(), bool)
            theta = np.full((batch.num_rows, k), np.nan)
            if batch.num_rows:
                theta = model.transform(read_counts([batch], V, self.column, nulls="empty"))
            offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32) * k)
            lists = pa.ListArray.from_arrays(offsets, pa.array(theta.ravel()),
                                             mask=pa.array(~present))
            yield pa.RecordBatch.from_arrays(
                [batch.column(n) for n in self.names] + [lists], names=self.names + [self.out])


class _Score:
    """mapInArrow over (features): one row (log-likelihood, tokens) per task, its
    documents folded in and scored by `LocalLDA.score`."""

    def __init__(self, shipped) -> None:
        self.shipped = shipped

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = _local(self.shipped)
        parts, tokens = [], 0
        for batch in batches:
            if not batch.num_rows:
                continue
            X = read_counts([batch], model.vocabulary_size)
            parts.append(model.score(X))
            tokens += int(X.sum())
        yield pa.RecordBatch.from_arrays([pa.array([math.fsum(parts)]),
                                          pa.array([tokens], pa.int64())],
                                         names=["log_likelihood", "tokens"])


ml.declare(_LDAParams, SPEC)
ml.keyword_init(LDA)
ml.add_accessors(LDAModel, ("featuresCol", "topicDistributionCol"), setters=True)
